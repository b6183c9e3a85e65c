"""The transfer protocols of paper Appendix B (Tables 11 and 12), one :class:`TransferProtocol` entry each
(docs/transfer.md, "Adding a protocol")."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.transfer import caltech, voc

if TYPE_CHECKING:
    from pipeline.transfer.run import TransferContext

__all__ = ["TransferProtocol", "PROTOCOLS"]


@dataclass(frozen=True)
class TransferProtocol:
    """One transfer protocol."""

    name: str
    about: str  # for the config's help
    evaluate: Callable[[TransferContext], dict[str, Any]]
    metric: str  # transfer.json's "metric"
    column: str  # Table 11's column heading; {dataset}: the name of the store's data folder
    ap: str | None = None  # the VOC AP rule (voc07: 11-point, voc10: area); None: mean class recall
    train_per_class: int | None = None  # images per class (random splits; None: given or all)
    test_per_class: int | None = None  # at most (None: all the rest)
    aggregate: str = "stack"  # over scales, by default
    regions: bool = False  # the box descriptors stacked with the whole image's

    @property
    def per_class(self) -> str:
        """What the per-class values are."""
        return "recall" if self.ap is None else "AP"


PROTOCOLS: dict[str, TransferProtocol] = {p.name: p for p in (
    TransferProtocol("voc07", "mAP, 11-point AP", voc.evaluate_voc, metric="mAP (VOC2007 11-point AP)",
                     column="VOC-2007 (mean AP)", ap="voc07", aggregate="avg"),
    TransferProtocol("voc12", "mAP, area AP", voc.evaluate_voc, metric="mAP (VOC2010+ AP, area)",
                     column="VOC-2012 (mean AP)", ap="voc10", aggregate="avg"),
    TransferProtocol("caltech101", "30 training / 50 test images per class", caltech.evaluate_caltech,
                     metric="mean class recall", column="Caltech-101 (mean class recall)", train_per_class=30,
                     test_per_class=50),
    TransferProtocol("caltech256", "60 training images per class, the rest for test", caltech.evaluate_caltech,
                     metric="mean class recall", column="Caltech-256 (mean class recall)", train_per_class=60),
    TransferProtocol("generic", "Caltech's procedure with any counts", caltech.evaluate_caltech,
                     metric="mean class recall", column="{dataset} (mean class recall)"),
    TransferProtocol("voc12-action", "Table 12: persons, image and box stacked", voc.evaluate_action,
                     metric="mAP over persons (VOC2010+ AP, area)", column="VOC-2012 action (mean AP)", ap="voc10",
                     aggregate="avg", regions=True),
)}
