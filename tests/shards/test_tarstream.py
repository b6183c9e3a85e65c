"""The one shard-tar reader yields exactly what webdataset's ``tarfile_to_samples`` yields on sound tars."""

from __future__ import annotations

import io
import shutil
import tarfile

import webdataset as wds

from pipeline.shards import ShardConfig, run_shard, shard_paths
from pipeline.shards.tarstream import ShardError, _members, read_shard, tar_samples


def _wds(urls):
    return list(wds.tarfile_to_samples()(iter([{"url": u} for u in urls])))


def test_same_samples_as_webdataset_on_real_shards_with_non_ascii_names(fm_tree, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(fm_tree, tree)
    first = sorted((tree / "train" / "bag").iterdir())[0]
    first.rename(first.with_name("sac_à_main_été_" + "x" * 120 + ".png"))  # pax path: non-ASCII and > 100 bytes
    run_shard(ShardConfig(source=str(tree), out=str(tmp_path / "shards"), workers=1, progress=False, shard_count=60))
    urls = shard_paths(tmp_path / "shards", "train") + shard_paths(tmp_path / "shards", "val")
    assert len(urls) >= 4
    ours = list(tar_samples(iter([{"url": u} for u in urls])))
    assert ours == _wds(urls) and len(ours) == 250
    assert any("été" in s["__key__"] for s in ours)


def test_gnu_headers_and_links_read_as_webdataset_does(tmp_path):
    path = tmp_path / "mixed.tar"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for i, data in enumerate([b"a" * 700, b"bb", b"c" * 512]):
            for ext, payload in (("jpg", data), ("cls", str(i).encode())):
                info = tarfile.TarInfo(f"s{i}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            if i == 0:  # a symbolic link: not a regular file
                link = tarfile.TarInfo("s0.link")
                link.type, link.linkname = tarfile.SYMTYPE, "s0.jpg"
                tar.addfile(link)
    ours = list(tar_samples(iter([{"url": str(path)}])))
    assert ours == _wds([str(path)]) and [s["__key__"] for s in ours] == ["s0", "s1", "s2"]
    assert [s["jpg"] for s in ours] == [b"a" * 700, b"bb", b"c" * 512] and ours[2]["cls"] == b"2"


def test_members_stream_regular_files_in_order(tmp_path):
    path = tmp_path / "plain.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, payload in (("k1.jpg", b"x" * 1025), ("k1.cls", b"7"), ("dir/k2.jpg", b"")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    assert list(_members(str(path))) == [("k1.jpg", b"x" * 1025), ("k1.cls", b"7"), ("dir/k2.jpg", b"")]


def test_header_walk_and_manifest_checks(tmp_path):
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for i in range(3):
            for ext, payload in (("jpg", bytes([i]) * (300 + i)), ("cls", str(i).encode())):
                info = tarfile.TarInfo(f"{'L' * 120}{i}.{ext}")  # a GNU long name ("L" header)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    size = path.stat().st_size
    full = list(read_shard(str(path), 3, size))
    walk = list(read_shard(str(path), 3, size, data=False))
    assert [s["__key__"] for s in walk] == [s["__key__"] for s in full] == [f"{'L' * 120}{i}" for i in range(3)]
    assert walk[0]["jpg"] is None and full[2]["jpg"] == bytes([2]) * 302
    for count, nbytes, msg in ((4, size, "3 samples read, the manifest says 4"),
                               (3, size + 512, f"{size} bytes, the manifest says")):
        try:
            list(read_shard(str(path), count, nbytes))
        except ShardError as e:
            assert msg in str(e) and str(path) in str(e) and "\n" not in str(e)
        else:
            raise AssertionError("not refused")


def test_end_of_archive_marker_required(tmp_path):
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("k.jpg")
        info.size = 10
        tar.addfile(info, io.BytesIO(b"0123456789"))
    data = path.read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[:1024])  # the member, without the two zero blocks
    (tmp_path / "extra.tar").write_bytes(data + b"junk" + bytes(508))  # data after the end marker
    for name, msg in (("cut.tar", "no end-of-archive marker"), ("extra.tar", "data after the end-of-archive marker")):
        try:
            list(read_shard(str(tmp_path / name)))
        except ShardError as e:
            assert msg in str(e)
        else:
            raise AssertionError(f"{name} not refused")
