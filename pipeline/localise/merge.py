"""OverFeat's greedy merging of bounding-box predictions (paper Appendix A.1): the closest pair merged (coordinates
averaged, scores summed) while its match score is at most ``t``; the rule and the scores: docs/formats.md 4.8.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from pipeline.config import StageConfig
from pipeline.localise.boxes import iou_matrix, overlaps

__all__ = ["MatchScore", "MergeConfig", "DEFAULT_THRESHOLDS", "match_scores", "greedy_merge", "best_box"]

MatchScore = Literal["iou", "overfeat", "overfeat-signed"]

#: The threshold ``t`` of each match score when none is given.
DEFAULT_THRESHOLDS: dict[str, float] = {"iou": 0.5, "overfeat": 0.1, "overfeat-signed": 0.0}


class MergeConfig(StageConfig):
    """OverFeat greedy merging: the pair score, when to stop, how to average."""

    match: MatchScore = Field("iou", description="pair score: iou (1 - IoU), overfeat (centre distance + "
                                                 "intersection area, as stated), overfeat-signed (distance - area)")
    threshold: float | None = Field(None, description="stop when the best pair scores above this; default per "
                                                      "match score: iou 0.5, overfeat 0.1, overfeat-signed 0.0")
    weighted: bool = Field(False, description="average merged boxes by how many predictions each holds "
                                              "(False: the plain average of the pair, as stated)")

    @property
    def t(self) -> float:
        """The threshold in effect."""
        return DEFAULT_THRESHOLDS[self.match] if self.threshold is None else self.threshold


def match_scores(a: np.ndarray, b: np.ndarray, match: MatchScore, size: tuple[int, int]) -> np.ndarray:
    """Match score of every box in ``a`` (N x 4 corners) with every box in ``b`` (M x 4): N x M; ``size``, the
    image's (width, height), is the unit of the OverFeat scores."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if match == "iou":
        return 1.0 - iou_matrix(a, b)
    w, h = float(size[0]), float(size[1])
    ca = np.stack([(a[:, 0] + a[:, 2] + 1) / (2 * w), (a[:, 1] + a[:, 3] + 1) / (2 * h)], axis=1)
    cb = np.stack([(b[:, 0] + b[:, 2] + 1) / (2 * w), (b[:, 1] + b[:, 3] + 1) / (2 * h)], axis=1)
    dist = np.sqrt(((ca[:, None, :] - cb[None, :, :]) ** 2).sum(-1))
    iw, ih = overlaps(a, b)
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None) / (w * h)
    if match == "overfeat":
        return dist + inter
    if match == "overfeat-signed":
        return dist - inter
    raise ValueError(f"unknown match score {match!r}")


def greedy_merge(boxes: np.ndarray, scores: np.ndarray, cfg: MergeConfig | None = None,
                 size: tuple[int, int] = (1, 1)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge N x 4 corner boxes of one class greedily, closest pair first, until the best pair scores above the
    threshold: (M x 4 merged boxes, their accumulated scores, counts of boxes merged), in order of first box."""
    cfg = cfg or MergeConfig()
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    s = np.asarray(scores, dtype=np.float64).reshape(-1).copy()
    if len(b) != len(s):
        raise ValueError(f"{len(b)} boxes but {len(s)} scores")
    n = np.ones(len(b))
    alive = np.ones(len(b), dtype=bool)
    if len(b) < 2:
        return b, s, n
    d = match_scores(b, b, cfg.match, size)
    np.fill_diagonal(d, np.inf)
    t = cfg.t
    while alive.sum() > 1:
        k = int(np.argmin(d))
        i, j = divmod(k, len(b))
        if not d[i, j] <= t:  # also stops on NaN
            break
        i, j = min(i, j), max(i, j)
        wi, wj = (n[i], n[j]) if cfg.weighted else (1.0, 1.0)
        b[i] = (wi * b[i] + wj * b[j]) / (wi + wj)
        s[i] += s[j]
        n[i] += n[j]
        alive[j] = False
        d[j, :] = np.inf
        d[:, j] = np.inf
        row = match_scores(b[i:i + 1], b, cfg.match, size)[0]
        row[~alive] = np.inf
        row[i] = np.inf
        d[i, :] = row
        d[:, i] = row
    return b[alive], s[alive], n[alive]


def best_box(boxes: np.ndarray, scores: np.ndarray, cfg: MergeConfig | None = None,
             size: tuple[int, int] = (1, 1)) -> tuple[np.ndarray, float]:
    """The merged box with the highest accumulated score, and that score (the final prediction)."""
    if len(boxes) == 0:
        raise ValueError("no boxes to merge")
    mb, ms, _ = greedy_merge(boxes, scores, cfg, size)
    k = int(np.argmax(ms))
    return mb[k], float(ms[k])
