"""Lay the shipped Fashion-MNIST files out as an ImageFolder tree (train/ and val/ class folders).

    python data/prepare_fashion_mnist.py OUT [--train-per-class 1000] [--val-per-class 200]

Deterministic; see pipeline/shipped/fashion_mnist.py for exactly which images go where.
"""

import argparse

from pipeline.shipped.fashion_mnist import prepare_fashion_mnist

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--train-per-class", type=int, default=1000)
    ap.add_argument("--val-per-class", type=int, default=200)
    a = ap.parse_args()
    print(prepare_fashion_mnist(a.out, a.train_per_class, a.val_per_class))
