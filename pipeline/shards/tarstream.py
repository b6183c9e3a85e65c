"""A fast reader of our own shard tars as webdataset samples (the training input pipeline, paper 3.1).

``webdataset.tarfile_to_samples`` walks tars with Python's ``tarfile``: about 0.2 ms per member, so
0.6 ms per sample of our three members (``.jpg``, ``.cls``, ``.json``), more than decoding and
augmenting a small image (measured, benchmarks/README.md). The shards that ``vgg shard`` writes are
ustar archives of regular files (each with a pax header), so this module reads the 512-byte headers
directly and yields the same dicts (``__key__``, ``__url__``, one bytes value per extension). Any
header it does not know (links, global pax headers, GNU long names) makes it hand the rest of the
file to webdataset's reader.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import webdataset as wds

__all__ = ["tar_samples"]

_BLOCK = 512


class _Unusual(Exception):
    pass


def _pax(block: bytes) -> dict[str, str]:
    """The records ``"<len> <key>=<value>\\n"`` of a pax extended header."""
    out, pos = {}, 0
    while pos < len(block) and block[pos:pos + 1] not in (b"", b"\0"):
        sp = block.index(b" ", pos)
        n = int(block[pos:sp])
        key, _, value = block[sp + 1:pos + n - 1].partition(b"=")
        out[key.decode("utf-8")] = value.decode("utf-8")
        pos += n
    return out


def _members(url: str) -> Iterator[tuple[str, bytes]]:
    """(name, content) of each regular file of a ustar/pax archive, streamed (shards can be 1 GB)."""
    pax: dict[str, str] = {}
    with open(url, "rb", buffering=1 << 20) as f:
        while True:
            h = f.read(_BLOCK)
            if len(h) < _BLOCK or h[0] == 0:  # end of the archive
                return
            kind = h[156:157]
            if h[257:262] != b"ustar" or kind not in (b"0", b"\0", b"x"):
                raise _Unusual
            size = int(h[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
            if kind == b"x":  # pax header: its path and size apply to the next member
                block = f.read(size)
                f.read(-size % _BLOCK)
                pax = _pax(block)
                continue
            name = h[0:100].split(b"\0", 1)[0].decode("utf-8")
            prefix = h[345:500].split(b"\0", 1)[0].decode("utf-8")
            name = pax.get("path") or (f"{prefix}/{name}" if prefix else name)
            size = int(pax.get("size", size))
            pax = {}
            value = f.read(size)
            if len(value) < size:
                raise _Unusual  # truncated: webdataset's reader reports it
            f.read(-size % _BLOCK)
            yield name, value


def _group(url: str, members: Iterable[tuple[str, bytes]]) -> Iterator[dict[str, Any]]:
    """Consecutive members with one key -> one sample (webdataset's ``group_by_keys`` rule)."""
    cur: dict[str, Any] | None = None
    for name, value in members:
        slash = name.rfind("/") + 1
        dot = name.find(".", slash)
        if dot < 0:
            continue
        key, ext = name[:dot], name[dot + 1:].lower()
        if cur is None or cur["__key__"] != key:
            if cur is not None:
                yield cur
            cur = {"__key__": key, "__url__": url}
        cur[ext] = value
    if cur is not None:
        yield cur


def tar_samples(src: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """webdataset stage: ``{"url": path}`` items -> samples, as ``wds.tarfile_to_samples()`` gives them."""
    for item in src:
        url, done = item["url"], 0
        try:
            for sample in _group(url, _members(url)):
                yield sample
                done += 1
        except (_Unusual, ValueError, UnicodeDecodeError):
            # a header this reader does not know (pax, long names, links) or a damaged file:
            # webdataset's own reader goes on from the samples already given
            for i, sample in enumerate(wds.tarfile_to_samples()([item])):
                if i >= done:
                    yield sample
