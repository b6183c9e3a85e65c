"""The paper's findings (its claims and numbers, Tables 3-11) and the rule, :data:`RULE`, fixed before any
number is seen, that decides whether ours reproduce them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PAPER", "RULE", "CLAIMS", "Comparison", "paired", "unpaired", "decide"]

RULE = (
    "A finding is **reproduced** when the paper's ordering holds in our test errors by more than two standard "
    "errors (SE) of the difference, in every comparison the finding lists; otherwise it is **not reproduced** (a "
    "difference within 2 SE, or the other way round). For the LRN finding, whose claim is \"no improvement\", it is "
    "reproduced unless A-LRN is better than A by more than 2 SE. Classification SEs are paired over the same test "
    "images (std of the per-image difference of the 0/1 errors / sqrt(n)); localisation SEs treat the two errors as "
    "independent binomial proportions; transfer uses the std over the Caltech-style splits / sqrt(splits), and the "
    "VOC-style mAP (one test set) only its sign. Numbers are never tuned on the test split: every setting was fixed "
    "before the run, and the plateau schedule sees only the validation split."
)

#: the paper's numbers (top-1 %, top-5 %) by table and our run / row id
PAPER: dict[str, dict[str, Any]] = {
    "table3": {"A-fixed": (29.6, 10.4), "A-LRN-fixed": (29.7, 10.5), "B-fixed": (28.7, 9.9),
               "B-5x5-fixed": ("B + 7", None), "C-fixed": (28.1, 9.4), "D-fixed": (27.0, 8.8),
               "E-fixed": (27.3, 9.0), "C-jitter": (27.3, 8.8), "D-jitter": (25.6, 8.1), "E-jitter": (25.5, 8.0)},
    "table4": {"B-fixed": (28.2, 9.6), "C-fixed": (27.7, 9.2), "C-jitter": (26.3, 8.2), "D-fixed": (26.6, 8.6),
               "D-jitter": (24.8, 7.5), "E-fixed": (26.9, 8.7), "E-jitter": (24.8, 7.5)},
    "table5": {"D-jitter dense": (24.8, 7.5), "D-jitter multi-crop": (24.6, 7.5), "D-jitter both": (24.4, 7.2),
               "E-jitter dense": (24.8, 7.5), "E-jitter multi-crop": (24.6, 7.4), "E-jitter both": (24.4, 7.1)},
    "table6": {"dense": (24.0, 7.1), "multi-crop": (23.9, 7.2), "both": (23.7, 6.8)},
    "table8": {"SCR, FC": 36.4, "PCR, FC": 34.3, "PCR, all": 33.1},
    "table11": {"D": {"voc07": 89.3, "caltech": 91.8}, "E": {"voc07": 89.3, "caltech": 92.3},
                "D & E": {"voc07": 89.7, "caltech": 92.7}},
}

#: finding id -> (paper table, the paper's claim)
CLAIMS: dict[str, tuple[str, str]] = {
    "depth": ("3", "error decreases with depth: D and E (16, 19 layers) beat A (11 layers), fixed S"),
    "lrn": ("3", "local response normalisation does not improve A (A-LRN 29.7% vs A 29.6%)"),
    "conv1x1": ("3", "D (3x3 convs) beats C (1x1 convs) at the same depth"),
    "shallow5x5": ("3 (Sect. 4.1)", "B beats the shallow B-5x5 (five 5x5 convs, same receptive fields) by 7% top-1"),
    "scale-jitter": ("3", "training with jittered S beats fixed S for C, D and E (single test scale)"),
    "multiscale-test": ("4", "testing at several scales Q beats a single scale (D and E, jittered S)"),
    "dense-vs-crop": ("5", "combining dense and multi-crop evaluation beats dense alone (D and E)"),
    "fusion": ("6", "fusing D and E beats the better of the two"),
    "localisation": ("8", "per-class regression beats single-class (FC layers), and fine-tuning all layers beats "
                          "FC only (PCR)"),
    "transfer": ("11", "deep features beat shallow ones (ours: raw pixels) on Caltech- and VOC-style sets"),
}


@dataclass
class Comparison:
    """``worse`` should have the higher error than ``better`` (the paper's ordering)."""

    label: str
    diff: float  # error(worse) - error(better), fraction (for transfer: score(better) - score(worse))
    se: float | None

    def holds(self) -> bool:
        return self.diff > (2 * self.se if self.se is not None else 0.0)

    def text(self) -> str:
        se = f", SE {100 * self.se:.2f}" if self.se is not None else ""
        return f"{self.label}: {100 * self.diff:+.2f} points{se}"


def paired(err_worse: np.ndarray, err_better: np.ndarray, label: str) -> Comparison:
    """Paired difference of two nets' 0/1 errors over the same images."""
    d = np.asarray(err_worse, dtype=np.float64) - np.asarray(err_better, dtype=np.float64)
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("inf")
    return Comparison(label, float(d.mean()), se)


def unpaired(p_worse: float, p_better: float, n: int, label: str) -> Comparison:
    """Difference of two binomial proportions measured on ``n`` images each."""
    se = math.sqrt((p_worse * (1 - p_worse) + p_better * (1 - p_better)) / max(n, 1))
    return Comparison(label, p_worse - p_better, se)


def decide(fid: str, comps: list[Comparison] | None, ours: str, *, need: int | None = None,
           no_gain: bool = False) -> dict[str, Any]:
    """A finding's record: reproduced by the rule (None when its runs were not done).

    ``need``: how many comparisons must hold (default all; the scale-jitter finding needs all three
    differences positive and ``need`` of them beyond 2 SE). ``no_gain``: the claim is "no improvement"
    (reproduced unless the reverse ordering holds by more than 2 SE).
    """
    table, claim = CLAIMS[fid]
    if comps is None:
        return {"id": fid, "table": table, "paper": claim, "ours": "not run", "reproduced": None, "note": "",
                "comparisons": []}
    if no_gain:
        ok = all(not Comparison(c.label, -c.diff, c.se).holds() for c in comps)
    elif need is not None:
        ok = all(c.diff > 0 for c in comps) and sum(c.holds() for c in comps) >= need
    else:
        ok = all(c.holds() for c in comps)
    return {"id": fid, "table": table, "paper": claim, "ours": ours, "reproduced": bool(ok),
            "note": "; ".join(c.text() for c in comps),
            "comparisons": [{"label": c.label, "diff": c.diff, "se": c.se} for c in comps]}
