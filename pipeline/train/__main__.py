"""``python -m pipeline.train --config PRESET [--set k=v ...] [--resume]``, also under torchrun."""

import sys

from pipeline.cli import main

main(["train", *sys.argv[1:]])
