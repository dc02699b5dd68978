"""``python -m cspon_rs.training ARGS`` = ``cspon-rs train ARGS``; the entry point for ``torchrun``:

    torchrun --nproc-per-node 2 -m cspon_rs.training --config configs/train_rgb.yaml --out runs/ddp
"""

from __future__ import annotations

import sys

from cspon_rs.cli import main

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "train", *sys.argv[1:]]
    main()
