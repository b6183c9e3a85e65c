"""The paper's findings, its numbers, and the rule that decides whether ours reproduce them.

The rule is fixed before any number is seen (it is printed at the top of every report): a finding
is reproduced when the paper's ordering holds in our test errors by more than two standard errors
of the difference. Classification differences are paired (the same test images): the standard
error is the standard deviation of the per-image difference of the two 0/1 errors over sqrt(n).
Localisation errors are compared as independent binomial proportions; transfer results by the
spread of the Caltech-style splits (VOC-style mAP has one test set and is compared by its sign).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PAPER", "RULE", "REASONS", "Comparison", "paired", "unpaired", "decide"]

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


#: the likely reason a finding did not reproduce in the committed full run (written after its numbers;
#: shown beside the verdict, never deciding it)
REASONS: dict[str, str] = {
    "lrn": "not the learning-rate schedule this time: both nets had their rate divided after epoch 20 "
           "(Table 3's last column). At this scale LRN does help A. Fashion-MNIST's grey garments on a black "
           "background give the first layer a few very strong responses, at the garments' edges, which LRN damps "
           "while it leaves weak responses almost unscaled; ImageNet's photos, on which the paper saw no gain, "
           "lack that contrast. The gain is not seed noise: a second seed of A-LRN gave 9.93% (the spread "
           "table), and two seeds of A gave 10.47% and 10.66% (the README's re-run paragraph).",
    "depth": "the paper's ordering holds for both deep nets, by +0.52 points (D) and +0.40 points (E) over A, "
             "but E's margin is 1.8 SE, short of the rule's 2 SE. Depth gains little at 32-pixel crops: after "
             "the third block every unit already sees the whole crop (see conv1x1), so the extra layers of D and E "
             "add capacity but no context. The paper's own E is no better than D at fixed S (27.3% vs 27.0%).",
    "scale-jitter": "Fashion-MNIST has no scale variation to learn: every garment is centred and fills its 28-pixel "
                    "frame. Jittering S up to 73 trains on 32-pixel windows that see as little as 44% of a garment, "
                    "while the classes differ by whole silhouettes (shirt, T-shirt, pullover and coat differ in "
                    "sleeves and collars). The jittered nets' errors rise with the test scale Q = 37, 55, 73: "
                    "C 15.5, 19.5, 30.4%; D 16.1, 19.0, 37.7%; E 16.3, 19.9, 41.6% (Table 4 by test scale, "
                    "below); even at Q = 37 they are worse than the fixed-S nets (C 9.9%, D 10.0%, E 10.1%). "
                    "ImageNet's objects appear at many sizes, which is what jittering S teaches in the paper.",
    "dense-vs-crop": "the paper's ordering holds for both nets, by +0.34 points (D, 2.03 SE) and +0.32 points (E, "
                     "1.78 SE), so E misses the rule's 2 SE. The paper's own gain is 0.4 points (on 50,000 images): a "
                     "gain of that size is at the edge of what 10,000 test images resolve. Multi-crop alone is worse "
                     "than dense here (Table 5), where the paper found it slightly better, so combining the two has "
                     "less to add.",
    "fusion": "our D-jitter and E-jitter make nearly the same errors (the counts are in the findings table): both "
              "start from the same A-fixed weights and see the same samples in the same order with the same "
              "augmentation (one seed), so averaging their posteriors can only act on the few images where exactly "
              "one of them is wrong. The fusion's gain, +0.11 points, is within its SE of 0.14.",
    "localisation": "the ordering holds in both comparisons, and fine-tuning all layers beats FC only by far (+23.2 "
                    "points, SE 3.2), but per-class regression beats single-class by 3.7 points with an SE of 3.2: "
                    "the ILSVRC-style set's 465 test images cannot resolve a gap of the paper's size (2.1 points, "
                    "measured on 50,000 images).",
    "conv1x1": "the spatial context that D's 3x3 convolutions add over C's 1x1 ones has nothing left to cover at "
               "32-pixel crops: the receptive field of a unit after the third block is 40 pixels in D and 32 in C, "
               "so in both nets it already spans the whole crop, and blocks 4 and 5 work on 4x4 and 2x2 maps. At "
               "the paper's 224-pixel crops the same units see 40 and 32 pixels of 224, and context matters.",
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
