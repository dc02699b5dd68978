"""Helpers of the training tests: synthetic pairs, LEVIR folders, tiny configs.

The module name is unique across test folders (``conftest`` names clash when imported from tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def synthetic_pair(
    rng: np.random.Generator, size: int = 64, bands: int = 3, dtype: str = "uint8"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured before image, the same scene after with 1-3 bright 'new buildings', and their 0/1 mask."""
    base = rng.normal(90, 20, size=(bands, size, size)).clip(0, 255)
    after = base + rng.normal(0, 4, size=base.shape)
    label = np.zeros((size, size), dtype=np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        h, w = (int(v) for v in rng.integers(6, 16, size=2))
        y, x = int(rng.integers(0, size - h)), int(rng.integers(0, size - w))
        label[y : y + h, x : x + w] = 1
        after[:, y : y + h, x : x + w] = 220
    return base.clip(0, 255).astype(dtype), after.clip(0, 255).astype(dtype), label


def write_levir(root: Path, n: int = 6, size: int = 64, seed: int = 0) -> Path:
    """Write a LEVIR-style folder (A/, B/, label/ PNGs, 0/255 labels, list/train.txt, list/val.txt)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for sub in ("A", "B", "label", "list"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    names = [f"pair_{i}" for i in range(n)]
    for name in names:
        a, b, lab = synthetic_pair(rng, size)
        Image.fromarray(a.transpose(1, 2, 0)).save(root / "A" / f"{name}.png")
        Image.fromarray(b.transpose(1, 2, 0)).save(root / "B" / f"{name}.png")
        Image.fromarray(lab * 255).save(root / "label" / f"{name}.png")
    if n >= 3:
        (root / "list" / "train.txt").write_text("\n".join(f"{n}.png" for n in names[:-2]) + "\n")
        (root / "list" / "val.txt").write_text(f"{names[-2]}.png\n")
        (root / "list" / "test.txt").write_text(f"{names[-1]}.png\n")
    return root


def write_tiny_config(
    path: Path, data_block: str, out_dir: Path, *, epochs: int = 1, extra_optim: str = ""
) -> Path:
    """Write a tiny training YAML around a ``data:`` block."""
    path.write_text(
        f"""{data_block}
model:
  architecture: siam_unet_lite
  init_kwargs: {{encoder_depth: 3, decoder_channels: [16, 16, 8]}}
optim: {{epochs: {epochs}, batch_size: 2, lr: 0.001, seed: 3, num_threads: 1{extra_optim}}}
output: {{dir: {out_dir}, name: tiny, version: "0.0.1"}}
""",
        encoding="utf-8",
    )
    return path
