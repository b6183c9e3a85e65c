"""`vgg` CLI: help, `vgg models --json` (Table 2), import-weights, one-line user errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torchvision

from pipeline.cli import main


def cli(*args: str) -> None:
    """Run the CLI in-process; it exits like the console script does."""
    with pytest.raises(SystemExit) as e:
        main(list(args))
    assert e.value.code in (0, None)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_the_stages():
    r = run_cli("--help")
    assert r.returncode == 0
    for stage in ("models", "import-weights", "prepare-data"):
        assert stage in r.stdout


def test_models_json_reproduces_table2(capsys):
    cli(*["models", "--json"])
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["nets"]}
    assert {k: v["params"] for k, v in rows.items()} == {
        "A": 132_863_336, "A-LRN": 132_863_336, "B": 133_047_848, "C": 133_638_952,
        "D": 138_357_544, "E": 143_667_240, "B-5x5": 134_503_528}
    assert [rows[k]["weight_layers"] for k in ("A", "B", "C", "D", "E", "B-5x5")] == [11, 13, 16, 16, 19, 8]
    assert [rows[k]["receptive_field"] for k in ("A", "B", "D", "E", "B-5x5")] == [134, 140, 196, 252, 140]
    assert abs(rows["D"]["gflops"] - 30.9) < 0.1


def test_models_prints_table2(capsys):
    cli("models")
    out = capsys.readouterr().out
    assert "| D | 16 | 138,357,544 | 30.94 | 196 |" in out and "crop 224, width x1, FC 4096, 1000 classes" in out
    assert "Section 2.3" in out


def test_models_json_sizes_small_nets(capsys):
    cli(*["models", "--json", "--width", "0.125", "--crop", "32", "--fc", "64", "--num-classes", "10"])
    rows = json.loads(capsys.readouterr().out)["nets"]
    assert all(r["crop"] == 32 and r["num_classes"] == 10 for r in rows)
    assert rows[0]["params"] < 200_000


def test_user_errors_are_one_line_without_traceback(tmp_path):
    for args, needle in [
        (("models", "--crop", "100"), "multiple of 32"),
        (("models", "--width", "0.001"), "zero channels"),
        (("import-weights", str(tmp_path / "missing.pth"), str(tmp_path / "o.pt")), "not found"),
    ]:
        r = run_cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert needle in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_import_weights_cli_checks_config(tmp_path, capsys):
    src = tmp_path / "vgg11.pth"
    torch.save(torchvision.models.vgg11(weights=None).state_dict(), src)
    r = run_cli("import-weights", str(src), str(tmp_path / "d.pt"), "--config", "D")
    assert r.returncode == 2 and "config A" in r.stderr and "Traceback" not in r.stderr
    cli(*["import-weights", str(src), str(tmp_path / "a.pt"), "--config", "A"])
    assert "config A" in capsys.readouterr().out
    from pipeline.models import load_model

    model, ck = load_model(tmp_path / "a.pt")
    assert model.cfg.config == "A" and ck["meta"]["normalization"]["std"][0] > 50
