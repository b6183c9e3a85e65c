"""Lay scikit-learn's handwritten digits out as a Caltech-256 tree (OUT/256_ObjectCategories/NNN.name/NNN_XXXX.jpg).

    python data/prepare_digits_caltech.py OUT [--size 64] [--seed 0]

Deterministic and offline (the digits ship with scikit-learn); see pipeline/shipped/digits_caltech.py.
"""

import argparse

from pipeline.shipped.digits_caltech import prepare_digits_caltech

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(prepare_digits_caltech(a.out, size=a.size, seed=a.seed))
