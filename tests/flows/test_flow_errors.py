"""Prefect flows report an expected failure as the CLI does: the failed task's state message is
the CLI's one line (no exception type, no traceback); transient I/O errors are still retried."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.errors import UserError
from pipeline.shards import StatsConfig, run_stats


def _cli_line(argv: list[str]) -> str:
    r = subprocess.run([sys.executable, "-m", "pipeline", *argv], capture_output=True, text=True, timeout=120)
    err = r.stderr.strip()
    assert r.returncode == 2 and err.startswith("error: ") and "\n" not in err, err
    return err[len("error: "):]


def test_failed_task_message_is_the_cli_line(prefect_harness, tmp_path):
    from prefect import flow

    from pipeline.flows.common import stage_task
    from pipeline.flows.stages import stats_flow

    @flow
    def one_task(cfg: StatsConfig) -> tuple[bool, str]:
        state = stage_task(run_stats, "stats")(cfg, return_state=True)
        return state.is_failed(), state.message

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{")
    for folder in ("missing", "bad"):
        cfg = StatsConfig(shards=str(tmp_path / folder), workers=1, progress=False)
        failed, message = one_task(cfg)
        assert failed
        assert message == _cli_line(["stats", str(tmp_path / folder)])
        assert "Traceback" not in message and "UserError" not in message
        with pytest.raises(UserError, match="manifest"):  # the flow itself fails with the same error
            stats_flow(cfg)
