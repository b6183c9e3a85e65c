"""The flow ``paper-reproduction``: ``vgg reproduce`` as Prefect tasks, with its tables as artifacts.

Every stage of every experiment runs as a task (its progress bar becomes a progress artifact of
the task run); the flow's own progress artifact counts the finished steps; when the report is
written, each table and the findings are published as table artifacts and the report as a
markdown artifact. A re-run of the flow with the same workdir continues where the last one stopped.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from pipeline.flows.common import publish_markdown, publish_table
from pipeline.flows.routing import Router
from pipeline.io import read_json
from pipeline.reproduce.report import TABLE_COLUMNS
from pipeline.reproduce.runner import ReproduceConfig, ReproduceResult, run_reproduce

__all__ = ["reproduction_flow"]


def _publish(res: ReproduceResult) -> None:
    results = read_json(res.results)
    publish_table([{k: f[k] for k in ("id", "table", "paper", "ours", "reproduced")} for f in results["findings"]],
                  "reproduction-findings", "The paper's findings: reproduced or not, by the report's rule")
    for key, title, cols in TABLE_COLUMNS:
        rows = results["tables"].get(key) or []
        if rows:
            publish_table([{c: r.get(c) for c in cols} for r in rows], f"reproduction-{key}", title)
    publish_markdown(Path(res.report).read_text(), "reproduction-report", "report.md of the reproduction")


@flow(name="paper-reproduction", description="The paper's experiments at small scale (Tables 3-6, 8-9, 11): "
      "train, test, localise, transfer; report, results and figures; resumes.")
def reproduction_flow(config: ReproduceConfig = ReproduceConfig()) -> ReproduceResult:  # noqa: B008 - UI form
    res = run_reproduce(config, call=Router("in-process"))
    _publish(res)
    return res
