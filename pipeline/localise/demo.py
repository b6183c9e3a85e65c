"""Tables 8 and 9 of the end-to-end demo on the ILSVRC-style set (paper Appendix A.2): Table 8's three nets trained
from one classifier, rated by the crop protocol; Table 9: PCR all-layers densely at one and two scales, PCR
FC-only at one, the fusion of the single-scale two; the set's blacklist applied, finished stages reused.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config import load_config
from pipeline.localise.config import LocaliseEvalConfig, LocaliseTrainConfig
from pipeline.localise.run import run_localise_evaluate, run_localise_train

__all__ = ["TABLE8_NETS", "demo_localisation"]

#: (head, fine-tuned layers) of Table 8's rows, in the paper's order
TABLE8_NETS = (("scr", "fc"), ("pcr", "fc"), ("pcr", "all"))
TRAIN_PRESET, EVAL_PRESET = "localise-train-small", "localise-eval-small"
#: the single test scale and the second scale of the multi-scale rows
DENSE_SCALES = (32, 64)


def demo_localisation(data: str, classifier: str, out: str | Path, epochs: int | None = None, bf16: bool = False,
                      task: Callable[[Callable[..., Any], str], Callable[..., Any]] | None = None) -> dict[str, Any]:
    """Train Table 8's nets into ``out/<head>-<layers>/`` and evaluate them into ``out/crop/`` and ``out/dense/``;
    ``task(fn, name)`` wraps each stage (a workflow task). Returns ``crop``, ``dense``, ``train`` (the training
    results by net) and ``training_seconds``."""
    task = task or (lambda fn, name: fn)
    from pipeline.shipped.ilsvrc_loc import BLACKLIST

    out = Path(out)
    speed = {"runtime": {"bf16": bf16, "channels_last": bf16}, "progress": False}
    trained: dict[str, dict[str, Any]] = {}
    for head, layers in TABLE8_NETS:
        name = f"{head}-{layers}"
        cfg = load_config(LocaliseTrainConfig, TRAIN_PRESET, [], data=data, classifier=classifier, head=head,
                          fine_tune=layers, out=str(out / name), epochs=epochs, **speed)
        trained[name] = task(run_localise_train, f"localise-train-{name}")(cfg)
    last = {name: str(out / name / "checkpoints" / "last.pt") for name in trained}
    black = Path(data) / BLACKLIST
    common = dict(data=data, split="val", blacklist=str(black) if black.is_file() else None, **speed)
    crop = task(run_localise_evaluate, "localise-crop")(load_config(
        LocaliseEvalConfig, EVAL_PRESET, [], checkpoints=[last[f"{h}-{f}"] for h, f in TABLE8_NETS], protocol="crop",
        out=str(out / "crop"), **common))
    q1, q2 = DENSE_SCALES
    dense = task(run_localise_evaluate, "localise-dense")(load_config(
        LocaliseEvalConfig, EVAL_PRESET, [], checkpoints=[last["pcr-all"], last["pcr-all"], last["pcr-fc"]],
        net_scales=[[q1], [q1, q2], [q1]], fusion_nets=[0, 2], classifier=classifier, protocol="dense",
        out=str(out / "dense"), **common))
    seconds = {name: round(sum(h["seconds"] for h in r["history"]), 1) for name, r in trained.items()}
    return {"crop": crop, "dense": dense, "train": trained, "training_seconds": seconds}
