"""Readers for the real dataset layouts (docs/formats.md); importing this registers all of them."""

from typing import Annotated

from pydantic import AfterValidator, Field

from pipeline.sources import (  # noqa: F401  (register their readers)
    caltech,
    ilsvrc,
    imagefolder,  # noqa: F401  (registers "imagefolder")
    manifest_source,
    voc,
    voc_action,
)
from pipeline.sources.base import SOURCES, Record, Source, open_source, register_source

__all__ = ["SOURCES", "Record", "Source", "open_source", "register_source", "SourceFormat"]


def _registered(name: str) -> str:
    if name != "auto" and name not in SOURCES:
        raise ValueError(f"unknown source layout {name!r} (auto, {', '.join(sorted(SOURCES))})")
    return name


#: the ``format`` field of every stage that reads a source dataset: its choices are the registered readers
SourceFormat = Annotated[str, AfterValidator(_registered), Field(
    description="source layout of a dataset that is not a shard folder: auto (detect) or "
                + ", ".join(sorted(SOURCES)))]
