"""Lay held-out Fashion-MNIST images out as an ILSVRC CLS-LOC localisation tree (OUT/ILSVRC/...).

    python data/prepare_ilsvrc_loc.py OUT [--per-class 150] [--canvas 64] [--seed 0]

Deterministic and offline (from data/fashion-mnist); see pipeline/shipped/ilsvrc_loc.py.
"""

import argparse

from pipeline.shipped.ilsvrc_loc import prepare_ilsvrc_loc

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--per-class", type=int, default=150)
    ap.add_argument("--canvas", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(prepare_ilsvrc_loc(a.out, train_per_class=a.per_class, canvas=a.canvas, seed=a.seed))
