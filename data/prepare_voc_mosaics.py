"""Lay held-out Fashion-MNIST images out as a PASCAL VOC 2007 tree of mosaics (OUT/VOCdevkit/VOC2007).

    python data/prepare_voc_mosaics.py OUT [--images 2000] [--canvas 112] [--seed 0]

Deterministic and offline (from data/fashion-mnist); see pipeline/shipped/voc_mosaics.py.
"""

import argparse

from pipeline.shipped.voc_mosaics import prepare_voc_mosaics

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--canvas", type=int, default=112)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(prepare_voc_mosaics(a.out, images=a.images, canvas=a.canvas, seed=a.seed))
