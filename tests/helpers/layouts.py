"""Builders of small datasets laid out exactly like the real ones (docs/formats.md), from real photos.

Images are crops of scikit-learn's sample photos (china.jpg, flower.jpg) saved as real JPEG/PNG
files; annotations, devkit files and tars follow the real formats byte for byte where it matters
(PASCAL XML, devkit meta.mat struct array, ground-truth ID list, Kaggle CSV, per-synset tars).
"""

from __future__ import annotations

import io
import os
import struct
import tarfile
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

# Devkit ID order differs from sorted-wnid order: ID 1 is n02119789 (kit fox), as in ILSVRC2012.
DEVKIT = [(1, "n02119789", "kit fox, Vulpes macrotis"), (2, "n02085620", "Chihuahua"),
          (3, "n01440764", "tench, Tinca tinca"), (4, "n01443537", "goldfish, Carassius auratus")]
WNIDS = sorted(w for _, w, _ in DEVKIT)


@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    """scikit-learn's sample photos, read straight from its package data (no sklearn import)."""
    import importlib.util

    base = Path(importlib.util.find_spec("sklearn").submodule_search_locations[0]) / "datasets" / "images"
    return tuple(np.asarray(Image.open(base / n).convert("RGB")) for n in ("china.jpg", "flower.jpg"))


def photo(i: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A real photo crop number ``i`` resized to ``size`` (w, h), RGB."""
    p = _photos()[i % 2]
    h, w = p.shape[:2]
    y, x = (i * 37) % (h - 200), (i * 53) % (w - 260)
    return Image.fromarray(p[y:y + 200, x:x + 260]).resize(size, Image.BILINEAR)


def jpeg_bytes(img: Image.Image, quality: int = 90, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, **kw)
    return buf.getvalue()


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def voc_xml(
    filename: str, size: tuple[int, int], objects: list[tuple[str, tuple, int]], folder: str = "VOC2007"
) -> str:
    """PASCAL VOC annotation XML; objects are (name, (xmin, ymin, xmax, ymax), difficult)."""
    objs = "".join(
        f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>{d}</difficult>"
        f"<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects)
    return (f"<annotation><folder>{folder}</folder><filename>{filename}</filename><size><width>{size[0]}</width>"
            f"<height>{size[1]}</height><depth>3</depth></size><segmented>0</segmented>{objs}</annotation>")


def _write_meta_mat(path: Path) -> None:
    import scipy.io

    dt = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O"),
          ("children", "O"), ("wordnet_height", "O"), ("num_train_images", "O")]
    rows = [(float(i), w, words, "gloss", 0.0, np.zeros((0,)), 0.0, 3.0) for i, w, words in DEVKIT]
    rows.append((5.0, "n00001740", "entity", "root", 4.0, np.array([1.0, 2.0, 3.0, 4.0]), 10.0, 0.0))
    arr = np.array(rows, dtype=dt).reshape(-1, 1)
    scipy.io.savemat(str(path), {"synsets": arr})


def build_ilsvrc(root: Path, per_class: int = 3, n_val: int = 8, tar_synset: str | None = "n01443537",
                 devkit_as_tar: bool = True, val_boxes: bool = True) -> dict:
    """Official layout: train/<wnid>/ (one synset as train/<wnid>.tar), flat val/, devkit, box XMLs.

    Returns {"val_wnids": [wnid of val image 1..n], "train": {key: bytes}}.
    """
    root.mkdir(parents=True, exist_ok=True)
    train: dict[str, bytes] = {}
    k = 0
    for wnid in WNIDS:
        files = {}
        for j in range(per_class):
            n = 10 + 7 * j  # neither fixed-width nor consecutive
            files[f"{wnid}_{n}.JPEG"] = jpeg_bytes(photo(k, (150 + 10 * j, 110)))
            k += 1
        if wnid == "n02085620":  # the PNG named .JPEG and a CMYK JPEG, as in ImageNet
            files[f"{wnid}_2933.JPEG"] = png_bytes(photo(k))
            files[f"{wnid}_5286.JPEG"] = jpeg_bytes(photo(k + 1).convert("CMYK"))
            k += 2
        if wnid == tar_synset:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tf:
                for name, data in files.items():
                    ti = tarfile.TarInfo(name)
                    ti.size = len(data)
                    tf.addfile(ti, io.BytesIO(data))
            (root / "train").mkdir(parents=True, exist_ok=True)
            (root / "train" / f"{wnid}.tar").write_bytes(buf.getvalue())
        else:
            d = root / "train" / wnid
            d.mkdir(parents=True, exist_ok=True)
            for name, data in files.items():
                (d / name).write_bytes(data)
        train.update({name.split(".")[0]: data for name, data in files.items()})
    # val: ground truth IDs in filename order; IDs chosen so that ID 1 (kit fox) is present
    ids = [(i % 4) + 1 for i in range(n_val)]
    (root / "val").mkdir(exist_ok=True)
    ann = root / "bbox" / "val"
    ann.mkdir(parents=True, exist_ok=True)
    id2w = {i: w for i, w, _ in DEVKIT}
    for i in range(1, n_val + 1):
        stem = f"ILSVRC2012_val_{i:08d}"
        img = photo(100 + i, (200, 150))
        (root / "val" / f"{stem}.JPEG").write_bytes(jpeg_bytes(img))
        if val_boxes:
            w = id2w[ids[i - 1]]
            # noise as in the real files: float coordinates, min > max, box past the border
            objs = [(w, (20.5, 30, 120, 100), 0), (w, (180, 140, 150, 90), 0), (w, (-5, 10, 260, 140), 0)]
            (ann / f"{stem}.xml").write_text(voc_xml("%s", (200, 150), objs, folder="val"))
    dk = root / "ILSVRC2012_devkit_t12" / "data"
    dk.mkdir(parents=True, exist_ok=True)
    _write_meta_mat(dk / "meta.mat")
    (dk / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{i}\n" for i in ids))
    if devkit_as_tar:
        with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tf:
            tf.add(root / "ILSVRC2012_devkit_t12", arcname="ILSVRC2012_devkit_t12")
        import shutil

        shutil.rmtree(root / "ILSVRC2012_devkit_t12")
    return {"val_wnids": [id2w[i] for i in ids], "train": train}


def build_ilsvrc_kaggle(root: Path, per_class: int = 2, n_val: int = 6) -> dict:
    """Kaggle ``imagenet-object-localization-challenge`` layout."""
    data = root / "ILSVRC" / "Data" / "CLS-LOC"
    ann = root / "ILSVRC" / "Annotations" / "CLS-LOC"
    k = 0
    for wnid in WNIDS:
        (data / "train" / wnid).mkdir(parents=True, exist_ok=True)
        (ann / "train" / wnid).mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            stem = f"{wnid}_{100 + j}"
            (data / "train" / wnid / f"{stem}.JPEG").write_bytes(jpeg_bytes(photo(k, (160, 120))))
            (ann / "train" / wnid / f"{stem}.xml").write_text(
                voc_xml(f"{stem}", (160, 120), [(wnid, (10, 10, 100, 90), 0)])
            )
            k += 1
    (data / "val").mkdir(parents=True)
    rows, val_wnids = ["ImageId,PredictionString"], []
    for i in range(1, n_val + 1):
        stem = f"ILSVRC2012_val_{i:08d}"
        (data / "val" / f"{stem}.JPEG").write_bytes(jpeg_bytes(photo(200 + i, (160, 120))))
        w = WNIDS[(i * 3) % 4]
        val_wnids.append(w)
        rows.append(f"{stem},{w} 10 20 100 110 {w} 30 30 60 60 ")
    (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    (root / "LOC_synset_mapping.txt").write_text(
        "".join(f"{w} {dict((x, y) for _, x, y in DEVKIT)[w]}\n" for w in WNIDS)
    )
    return {"val_wnids": val_wnids}


VOC_IMAGES = {  # id -> objects (name, box, difficult)
    "000005": [("chair", (10, 20, 60, 90), 0), ("chair", (70, 20, 110, 90), 1)],
    "000007": [("car", (5, 5, 150, 100), 0)],
    "000009": [("horse", (30, 10, 120, 110), 0), ("person", (40, 5, 80, 60), 0)],
    "000012": [("car", (15, 25, 140, 100), 1)],   # only a difficult car: label 0
    "000016": [("bicycle", (20, 30, 100, 110), 0), ("person", (1, 1, 50, 60), 1)],
    "000017": [("horse", (5, 10, 150, 115), 0), ("person", (40, 5, 90, 70), 0)],
}
VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor"]


def voc_label(objs, c: str) -> int:
    o = [d for n, _, d in objs if n == c]
    return 1 if any(d == 0 for d in o) else (0 if o else -1)


def build_voc(root: Path, year: str = "2007", class_files: bool = True) -> Path:
    """VOCdevkit/VOC<year> with trainval/test splits, per-class label files, XML with difficult flags."""
    d = root / "VOCdevkit" / f"VOC{year}"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    ids = list(VOC_IMAGES)
    if year == "2012":
        ids = [f"2008_{i}" for i in ids]
    for n, (i, objs) in enumerate(zip(ids, VOC_IMAGES.values(), strict=False)):
        (d / "JPEGImages" / f"{i}.jpg").write_bytes(jpeg_bytes(photo(300 + n, (160, 120))))
        (d / "Annotations" / f"{i}.xml").write_text(voc_xml(f"{i}.jpg", (160, 120), objs, folder=f"VOC{year}"))
    splits = {"trainval": ids[:4], "test": ids[4:]}
    for s, sids in splits.items():
        (d / "ImageSets" / "Main" / f"{s}.txt").write_text("".join(f"{i}\n" for i in sids))
        if class_files:
            for c in VOC_CLASSES:
                lines = "".join(f"{i} {voc_label(VOC_IMAGES[i[-6:]], c):2d}\n" for i in sids)
                (d / "ImageSets" / "Main" / f"{c}_{s}.txt").write_text(lines)
    return d


C101 = ["BACKGROUND_Google", "Faces", "Faces_easy", "Leopards", "Motorbikes", "accordion", "airplanes"]
C256 = ["001.ak47", "056.dog", "198.spider", "257.clutter"]


def build_caltech101(root: Path, per_class: int = 2) -> Path:
    d = root / "101_ObjectCategories"
    k = 0
    for c in C101:
        (d / c).mkdir(parents=True, exist_ok=True)
        for j in range(1, per_class + 1):
            (d / c / f"image_{j:04d}.jpg").write_bytes(jpeg_bytes(photo(400 + k, (140, 100))))
            k += 1
    (d / "Faces" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    return d


def build_caltech256(root: Path, per_class: int = 2) -> Path:
    d = root / "256_ObjectCategories"
    k = 0
    for c in C256:
        (d / c).mkdir(parents=True, exist_ok=True)
        num = c.split(".")[0]
        for j in range(1, per_class + 1):
            (d / c / f"{num}_{j:04d}.jpg").write_bytes(jpeg_bytes(photo(500 + k, (140, 100))))
            k += 1
    (d / "056.dog" / "greg").mkdir()  # stray folder with images inside (not part of the dataset)
    (d / "056.dog" / "greg" / "vision309").write_bytes(jpeg_bytes(photo(1)))
    (d / "056.dog" / "greg" / "x.jpg").write_bytes(jpeg_bytes(photo(2)))
    (d / "198.spider" / "RENAME2").write_text("rename\n")
    return d


def png_bomb(width: int = 40000, height: int = 40000) -> bytes:
    """A PNG header claiming ``width x height`` pixels followed by a tiny IDAT (a decompression bomb)."""
    def chunk(t: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + t + body + struct.pack(">I", zlib.crc32(t + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + chunk(b"IEND", b"")
    )


def build_bad_tree(root: Path) -> dict[str, str | None]:
    """ImageFolder ``root/{train,val}/<class>/`` full of real-world trouble.

    Returns {relative path: expected skip-reason category or None (usable)}.
    """
    t = root / "train"
    good, odd, empty = t / "good", t / "odd", t / "emptyclass"
    for d in (good, odd, empty, root / "val" / "good", root / "val" / "odd", root / "val" / "emptyclass"):
        d.mkdir(parents=True, exist_ok=True)
    big = photo(7, (1200, 900))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display: stored 200x120 shows as 120x200
    files: dict[str, tuple[bytes, str | None]] = {
        "good/rgb_small.jpg": (jpeg_bytes(photo(1, (200, 150))), None),
        "good/rgb_big.jpg": (jpeg_bytes(big), None),
        "good/grey.jpg": (jpeg_bytes(photo(2).convert("L")), None),
        "good/cmyk.JPEG": (jpeg_bytes(photo(3).convert("CMYK")), None),
        "good/png_named.JPEG": (png_bytes(photo(4)), None),
        "odd/palette_transparent.png": (None, None),
        "odd/rgba.png": (png_bytes(photo(5).convert("RGBA")), None),
        "odd/sixteen_bit.png": (None, None),
        "odd/exif_rotated.jpg": (jpeg_bytes(photo(6, (200, 120)), exif=exif.tobytes()), None),
        "odd/truncated.jpg": (jpeg_bytes(photo(8, (300, 200)))[:600], "cannot decode"),
        "odd/empty.jpg": (b"", "empty file"),
        "odd/page.jpg": (b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n", "not an image"),
        "odd/bomb.png": (png_bomb(), "decompression bomb"),
    }
    pal = photo(9).quantize(colors=16, dither=Image.Dither.NONE)
    idx = np.array(pal)
    idx[:, :60] = 0  # a transparent block on the left
    pal_t = Image.fromarray(idx, "P")
    pal_t.putpalette(pal.getpalette())
    buf = io.BytesIO()
    pal_t.save(buf, format="PNG", transparency=0)
    files["odd/palette_transparent.png"] = (buf.getvalue(), None)
    arr16 = (np.asarray(photo(10).convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr16).save(buf, format="PNG")
    files["odd/sixteen_bit.png"] = (buf.getvalue(), None)
    expected: dict[str, str | None] = {}
    for rel, (data, reason) in files.items():
        (t / rel).write_bytes(data)
        expected[f"train/{rel}"] = reason
    os.symlink(t / "good" / "missing.jpg", t / "good" / "broken_link.jpg")
    expected["train/good/broken_link.jpg"] = "unreadable"
    (t / "good" / ".hidden.jpg").write_bytes(jpeg_bytes(photo(11)))
    (t / "good" / ".cache").mkdir()
    (t / "good" / ".cache" / "thumb.jpg").write_bytes(jpeg_bytes(photo(12)))
    (root / "val" / "good" / "v1.jpg").write_bytes(jpeg_bytes(photo(13)))
    (root / "val" / "odd" / "v2.png").write_bytes(png_bytes(photo(14)))
    expected["val/good/v1.jpg"] = None
    expected["val/odd/v2.png"] = None
    return expected
