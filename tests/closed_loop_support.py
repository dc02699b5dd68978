"""Helpers of the closed-loop tests (labels export, model registry): real checkpoints derived from the shipped
ones, a fine-tune's ``holdout.json``, small real GeoTIFF scenes. ``tests/`` is on ``sys.path``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHECKPOINTS = REPO / "models" / "checkpoints"
SHIPPED = {"s2-rgbn": CHECKPOINTS / "s2_rgbn_effl0_siamunet", "rgb": CHECKPOINTS / "rgb_effl0_siamunet"}


def derived_checkpoint(out_stem: Path, *, source: str = "s2-rgbn", version: str = "county.1",
                       bump: float = 1e-3) -> Path:
    """A real, loadable checkpoint: the shipped weights with one bias shifted by ``bump`` (so its sha256
    differs) and the card's version set to ``version``. Returns the ``.safetensors`` path."""
    from safetensors.numpy import load_file, save_file

    src = SHIPPED[source]
    state = load_file(str(src.with_suffix(".safetensors")))
    key = next(k for k in sorted(state) if k.endswith("bias") and state[k].dtype.kind == "f")
    state[key] = (state[key].astype(np.float32) + np.float32(bump)).astype(state[key].dtype)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out_stem.with_suffix(".safetensors")), metadata={"format": "cspon-rs"})
    card = json.loads(src.with_suffix(".json").read_text(encoding="utf-8"))
    card["version"] = version
    out_stem.with_suffix(".json").write_text(json.dumps(card), encoding="utf-8")
    return out_stem.with_suffix(".safetensors")


def write_holdout(path: Path, *, candidate: float, parent: float, parent_checkpoint: Path | str | None,
                  candidate_checkpoint: Path | None = None, metric: str = "f1", n_holdout: int = 12,
                  labels: Path | None = None) -> Path:
    """A ``holdout.json`` as the fine-tune writes it (figures of the candidate and its parent)."""
    data: dict[str, Any] = {
        "labels": {"path": str(labels or path.parent / "verified.gpkg"), "sha256": "ab" * 32, "n_train": 30,
                   "n_holdout": n_holdout},
        "candidate": {"f1": candidate, "warning_precision": candidate, "threshold": 0.4, "precision": 0.5},
        "parent": {"f1": parent, "warning_precision": parent, "threshold": 0.15, "precision": 0.4},
        "parent_checkpoint": None if parent_checkpoint is None else str(parent_checkpoint),
        "metric": metric,
    }
    if candidate_checkpoint is not None:
        data["candidate_checkpoint"] = str(candidate_checkpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_scene(path: Path, *, seed: int, size: int = 64, bands: int = 4, bright: bool = False,
                origin: tuple[float, float] = (114.10, 22.40)) -> Path:
    """A small seeded uint16 GeoTIFF near Hong Kong (EPSG:4326, about 10 m pixels, ``origin`` = top left)."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    data = rng.integers(800, 1200, size=(bands, size, size), dtype=np.uint16)
    if bright:
        data[:, 20:40, 20:40] += 2500
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=bands, dtype="uint16",
                       crs="EPSG:4326", transform=from_origin(*origin, 0.0001, 0.0001)) as dst:
        dst.write(data)
    return path
