"""Helpers of the training tests: synthetic pairs, LEVIR folders, tiny configs.

The module name is unique across test folders (``conftest`` names clash when imported from tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer


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


def smooth_host(rng: np.random.Generator, size: int = 96, bands: int = 3, level: float = 60.0) -> np.ndarray:
    """A smooth, textured ``(bands, size, size)`` uint8 'unlabelled image' (fields, roads' shading), no change."""
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.normal(0.0, 1.0, size=(bands, size, size)), sigma=(0, 4, 4))
    field = field / (field.std() + 1e-6)
    ramp = np.linspace(-1.0, 1.0, size)[None, None, :]
    img = level + 10.0 * field + 8.0 * ramp
    return np.asarray(img.clip(0, 255).astype(np.uint8))


def write_hosts(folder: Path, n: int = 2, size: int = 96, seed: int = 5) -> Path:
    """Write ``n`` smooth RGB host PNGs (unlabelled imagery for synthetic pairs) into ``folder``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        Image.fromarray(smooth_host(rng, size).transpose(1, 2, 0)).save(folder / f"host_{k}.png")
    return folder


def write_two_source_project(root: Path) -> tuple[Path, Path, Path]:
    """Two LEVIR-style sources (``data/a``: 6 pairs, ``data/b``: 5 pairs, other seed) and unlabelled hosts.

    Returns ``(data/a, data/b, hosts)``; configs placed in ``root/configs`` refer to them as ``../data/a``...
    """
    a = write_levir(root / "data" / "a", n=6, seed=0)
    b = write_levir(root / "data" / "b", n=5, seed=1)
    hosts = write_hosts(root / "hosts")
    (root / "configs").mkdir(parents=True, exist_ok=True)
    return a, b, hosts


TINY_MODEL = "model: {architecture: siam_unet_lite, init_kwargs: {encoder_depth: 3, decoder_channels: [16, 16, 8]}}"


def two_source_yaml(
    *,
    model: str = TINY_MODEL,
    optim: str = "optim: {epochs: 1, batch_size: 2, lr: 0.001, seed: 3, num_threads: 1}",
    augment: str = "",
    extra_b: str = "",
    data_extra: str = "",
    name_b: str = "b",
) -> str:
    """YAML of a two-source config with *relative* paths (for a config file in ``<project>/configs``)."""
    return f"""data:
  name: a
  kind: levir
  root: ../data/a
  train: list/train.txt
  val: list/val.txt
  test: list/test.txt
  crop_size: 64
  crops_per_epoch: 4
  extra_sources:
    - name: {name_b}
      kind: levir
      root: ../data/b
      train: list/train.txt
      val: list/val.txt
      test: list/test.txt
{extra_b}{data_extra}{model}
{augment}
{optim}
output: {{dir: ../runs/tiny, name: tiny, version: "0.0.1"}}
"""


def cli_app() -> typer.Typer:
    """A Typer app with the training commands registered (for CliRunner tests)."""
    from cspon_rs.training.cli import register

    app = typer.Typer()

    @app.command()
    def _noop() -> None:  # a second command so typer keeps sub-command names
        pass

    register(app)
    return app
