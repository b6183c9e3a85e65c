"""Readers for the real dataset layouts (docs/formats.md); importing this registers all of them."""

from pipeline.sources.base import SOURCES, Record, Source, open_source, register_source
from pipeline.sources import imagefolder  # noqa: F401  (registers "imagefolder")
from pipeline.sources import caltech, ilsvrc, manifest_source, voc, voc_action  # noqa: F401  (register their readers)

__all__ = ["SOURCES", "Record", "Source", "open_source", "register_source"]
