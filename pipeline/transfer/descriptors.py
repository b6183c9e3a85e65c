"""Image descriptors of the transfer protocols (paper Appendix B) read from feature stores, aggregated over
scales, stacked (late fusion) and L2-normalised; the raw-pixel baseline store (docs/transfer.md, "Descriptors")."""

from __future__ import annotations

import os
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.features.store import FeatureStore, l2_normalise

__all__ = ["Descriptors", "load_descriptors", "join_test_rows", "store_summary", "write_pixel_store", "L2_FUSION"]

#: requested L2 place -> (what each store applies, whether the fused descriptor is normalised again)
L2_FUSION: dict[str, tuple[str, bool]] = {
    "aggregate": ("none", True), "both": ("scale", True), "net": ("net", False), "scale": ("scale", False),
    "none": ("none", False),
}


@dataclass
class Descriptors:
    """Rows of one or more fused stores: ``X[i]`` describes image ``ids[i]`` with ``labels[i]``."""

    ids: np.ndarray
    labels: np.ndarray
    classes: list[str]
    label_kind: str
    X: np.ndarray
    stores: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)


def store_summary(st: FeatureStore) -> dict[str, Any]:
    """What a result records about a store: path, identity, nets, scales, rows."""
    prov = st.provenance
    nets = []
    for ck in prov.get("checkpoints", []) or []:
        m = ck.get("model", {}) if isinstance(ck, dict) else {}
        nets.append({"config": m.get("config"), "width": m.get("width"), "sha256": ck.get("sha256")})
    return {"path": str(st.path), "identity": st.identity, "rows": st.n, "nets": nets, "scales": st.scales,
            "dims": st.dims, "descriptor": prov.get("descriptor", "deep"),
            "data": {k: (prov.get("data") or {}).get(k) for k in ("path", "kind", "split", "fingerprint")}}


def _check_first(st: FeatureStore, require_labels: bool) -> None:
    if st.n == 0:
        raise UserError(f"{st.path}: no described images")
    labels = np.asarray(st.labels)
    multi = st.label_kind == "multi" or labels.ndim == 2
    if require_labels and not (labels.size and ((labels != 0) if multi else (labels >= 0)).any()):
        raise UserError(f"{st.path}: the store has no labels (every image is unlabelled); "
                        "the transfer protocols need labelled images")


def _check_same(first: FeatureStore, other: FeatureStore) -> None:
    if other.label_kind != first.label_kind or list(other.classes) != list(first.classes):
        raise UserError(f"cannot stack {other.path} with {first.path}: different classes or label kinds")
    ids, oids = first.ids, other.ids
    if len(oids) != len(ids) or not np.array_equal(oids, ids):
        extra, missing = sorted(set(oids) - set(ids))[:1], sorted(set(ids) - set(oids))[:1]
        what = (f"{len(oids)} vs {len(ids)} images" if len(oids) != len(ids) else
                "the same number of images in another order" if set(oids) == set(ids) else "other images")
        hint = (f"; e.g. {extra[0]!r} only in {other.path.name}" if extra else "") + \
               (f"; e.g. {missing[0]!r} only in {first.path.name}" if missing else "")
        raise UserError(
            f"cannot stack feature stores of different images: {other.path} has {what} than {first.path}{hint}"
        )
    if not np.array_equal(other.labels, first.labels):
        raise UserError(f"cannot stack {other.path} with {first.path}: the same ids carry different labels")


def load_descriptors(paths: list[str | os.PathLike[str]], aggregate: str = "avg", scales: list[int] | None = None,
                     l2: str = "aggregate", regions: bool = False, require_labels: bool = True) -> Descriptors:
    """The descriptors of one or more stores of the same images, stacked (float32 ``X``; docs/transfer.md).

    ``aggregate`` (``avg``, ``stack``) over ``scales`` (default: all); ``l2``: where to L2-normalise
    (:data:`L2_FUSION`); ``regions``: the box descriptors too (Table 12). UserError for unlabelled
    (with ``require_labels``), mismatched, damaged or non-finite stores.
    """
    if not paths:
        raise UserError("no feature store given")
    if l2 not in L2_FUSION:
        raise UserError(f"l2 must be one of {', '.join(L2_FUSION)}, got {l2!r}")
    per_store, final = L2_FUSION[l2]
    blocks, stores = [], []
    with ExitStack() as opened:
        for p in paths:
            st = opened.enter_context(FeatureStore(p))
            if stores:
                _check_same(stores[0], st)
            else:
                _check_first(st, require_labels)
            stores.append(st)
            blocks.append(st.features(aggregate=aggregate, scales=scales, l2=per_store, regions=regions))
        first = stores[0]
        X = np.hstack(blocks) if len(blocks) > 1 else blocks[0]
        if final:
            X = l2_normalise(X)
        _check_finite(X, first.ids, paths)
        return Descriptors(ids=np.asarray(first.ids).astype(str), labels=np.asarray(first.labels),
                           classes=list(first.classes), label_kind=first.label_kind,
                           X=np.ascontiguousarray(X, dtype=np.float32), stores=[store_summary(s) for s in stores],
                           failed=first.failed)


def join_test_rows(a: Descriptors, b: Descriptors) -> tuple[Descriptors, int]:
    """Training-store rows followed by test-store rows; the test rows start at the returned offset."""
    if a.classes != b.classes or a.label_kind != b.label_kind:
        raise UserError("the test stores have other classes or label kinds than the training stores")
    if a.X.shape[1] != b.X.shape[1]:
        raise UserError(f"the test stores give {b.X.shape[1]}-D descriptors, the training stores {a.X.shape[1]}-D "
                        "(same nets, scales and aggregation needed)")
    shared = set(a.ids) & set(b.ids)
    if shared:
        raise UserError(
            f"the test stores share {len(shared)} image(s) with the training stores, e.g. {sorted(shared)[0]!r}"
        )
    return Descriptors(ids=np.concatenate([a.ids, b.ids]), labels=np.concatenate([a.labels, b.labels]),
                       classes=a.classes, label_kind=a.label_kind, X=np.vstack([a.X, b.X]), stores=a.stores,
                       failed=a.failed + b.failed), len(a.ids)


def _check_finite(X: np.ndarray, ids: np.ndarray, paths: list[str | os.PathLike[str]]) -> None:
    """Refuse descriptors that are not finite after fusion (every SVM solver needs finite input)."""
    bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
    if len(bad):
        shown = ", ".join(repr(str(ids[r])) for r in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise UserError(
            f"non-finite descriptors (NaN/Inf) for {len(bad)} image(s) of {', '.join(map(str, paths))}: {shown}"
        )


def write_pixel_store(data: str | os.PathLike[str], out: str | os.PathLike[str], size: int = 32,
                      split: str | None = None, format: str = "auto") -> Path:
    """Write the raw-pixel baseline of ``data`` (shards or a source; ``split``, ``format`` as ``vgg extract``'s)
    as the feature store ``out`` (docs/transfer.md, "Descriptors"): each image resized bilinearly to
    ``size`` x ``size`` RGB. A finished store of the same identity is reused, anything else replaced."""
    import pipeline
    from pipeline.features.batches import ExtractInput
    from pipeline.features.store import FORMAT, StoreLayout, StoreOutput, create_store
    from pipeline.io import atomic_path
    from pipeline.reuse import check_reusable, identity

    if size < 1:
        raise UserError(f"size must be positive, got {size}")
    inp = ExtractInput(data, split, format)
    if not inp.entries:
        raise UserError(f"{data}: split {inp.split!r} has no images")
    out = Path(out)
    ident = identity(format=FORMAT, descriptor="raw pixels", size=size, data=inp.fingerprint, kind=inp.kind,
                     split=inp.split)
    if check_reusable(StoreOutput(out, what="a raw-pixel store"), ident, overwrite=True) == "reuse":
        return out
    provenance = {"descriptor": "raw pixels", "size": size, "identity": ident,
                  "data": {**inp.describe(), "path": str(Path(data).resolve())}, "scales": [size], "flip": False,
                  "checkpoints": [], "pipeline_version": pipeline.__version__}
    layout = StoreLayout(ids=[e.key for e in inp.entries], labels=inp.labels(), label_kind=inp.label_kind,
                         classes=inp.classes, dims=[3 * size * size], scales=[size], provenance=provenance,
                         identity=ident)
    with atomic_path(out) as tmp:
        create_store(tmp, layout, label=out)
        _write_pixels(tmp, out, inp, size)
    return out


def _write_pixels(tmp: Path, out: Path, inp: Any, size: int) -> None:
    """Every image's resized pixels into the created store ``tmp`` (named ``out`` in messages), then finalise it."""
    from PIL import Image

    from pipeline.features.store import StoreWriter

    n, dim = len(inp.entries), 3 * size * size
    with closing(StoreWriter(tmp, label=out)) as w:
        for start in range(0, n, 256):
            stop = min(n, start + 256)
            desc = np.zeros((stop - start, 1, dim), dtype=np.float32)
            ok = np.zeros(stop - start, dtype=bool)
            failures = []
            for item in inp.items(range(start, stop)):
                r = item.row - start
                if item.image is None:
                    failures.append((item.row, item.key, item.error or "undecodable"))
                    continue
                desc[r, 0] = np.asarray(item.image.resize((size, size), Image.BILINEAR), dtype=np.float32).ravel()
                ok[r] = True
            w.write_batch(start, [desc], ok, failures)
        w.finalize()
