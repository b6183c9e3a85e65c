"""Readers for the real dataset layouts (docs/formats.md); importing this registers all of them."""

from pipeline.sources import (  # noqa: F401  (register their readers)
    caltech,
    ilsvrc,
    imagefolder,  # noqa: F401  (registers "imagefolder")
    manifest_source,
    voc,
    voc_action,
)
from pipeline.sources.base import SOURCES, Record, Source, open_source, register_source

__all__ = ["SOURCES", "Record", "Source", "open_source", "register_source"]
