"""The CLI seen from the fault tests: run ``vgg`` in this process, check a one-line refusal."""

from __future__ import annotations

from pipeline.cli import main


def vgg(argv: list, capsys) -> tuple[int, str, str]:
    """``vgg ARGV`` through the package's ``main``: (exit code, stdout, stderr)."""
    code = 0
    try:
        main([str(a) for a in argv])
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def refused(res: tuple[int, str, str], *needles: str) -> str:
    """Exit 2, exactly one ``error:`` line (the last), naming every needle; no traceback anywhere."""
    code, out, err = res
    assert "Traceback" not in out + err, err
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: ") and sum(ln.startswith("error:") for ln in lines) == 1, err
    assert all(n in lines[-1] for n in needles), lines[-1]
    return lines[-1]
