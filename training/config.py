"""Typed training configuration (``configs/train_*.yaml``).

The config only wires steps together; every step (dataset loading, augmentation, the loop, evaluation)
is a plain function usable without it. Unknown keys are rejected with the key named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from cspon_rs.config import StrictModel, load_yaml_config

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "OutputConfig",
    "PairSpec",
    "TrainConfig",
    "load_train_config",
]

#: A split: a list of item ids, or the path (relative to ``data.root``) of a text file with one id a line.
Split = list[str] | str | None


class PairSpec(StrictModel):
    """One GeoTIFF pair for ``kind: geotiff_pairs``. Paths are relative to ``data.root`` when not absolute.

    Exactly one of ``label`` (a raster of 0/1 or 0/255, any grid; it is read on the date-1 grid) and
    ``label_vector`` (change polygons in any CRS, burned onto the date-1 grid) must be given.
    """

    id: str
    before: Path
    after: Path
    label: Path | None = None
    label_vector: Path | None = None
    label_layer: str | None = None

    @model_validator(mode="after")
    def _one_label(self) -> PairSpec:
        if (self.label is None) == (self.label_vector is None):
            raise ValueError(f"pair {self.id!r}: give exactly one of 'label' (raster) or 'label_vector'")
        return self


class DataConfig(StrictModel):
    """Where the training pairs come from and how they are split and cropped."""

    kind: Literal["levir", "oscd", "geotiff_pairs"]
    root: Path = Field(description="Dataset folder (LEVIR: has A/ B/ label/; OSCD: has A/ B/ label/<city>/).")
    bands: list[str] | None = Field(
        None, description="Band names; OSCD: which Sentinel-2 bands to stack (default B04,B03,B02,B08)."
    )
    pairs: list[PairSpec] = Field(default_factory=list, description="Pairs for kind=geotiff_pairs.")
    train: Split = Field(None, description="Training ids or list file; default: all ids not in val/test.")
    val: Split = None
    test: Split = None
    crop_size: int = Field(128, gt=0, description="Edge of random training crops (pixels, multiple of 32).")
    crops_per_epoch: int = Field(256, gt=0)
    positive_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="Share of crops centred on a changed pixel (fights class imbalance)."
    )

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.crop_size % 32:
            raise ValueError(f"crop_size must be a multiple of 32, got {self.crop_size}")
        if self.kind == "geotiff_pairs" and not self.pairs:
            raise ValueError("kind 'geotiff_pairs' needs a non-empty 'pairs' list")
        return self


class ModelConfig(StrictModel):
    """Architecture (registry name) and its create_model keyword arguments."""

    architecture: str = "siam_unet_lite"
    init_kwargs: dict[str, Any] = Field(default_factory=dict)


class AugmentConfig(StrictModel):
    """Augmentation: geometric ops are shared by both dates and the mask, photometric jitter is per date."""

    flips: bool = True
    rot90: bool = True
    brightness: float = Field(0.1, ge=0.0, description="Max relative gain change per date (0.1 = +-10 %).")
    contrast: float = Field(0.1, ge=0.0, description="Max relative contrast change per date.")
    noise_std: float = Field(0.0, ge=0.0, description="Gaussian noise std in normalised units.")
    swap_dates: bool = Field(False, description="Randomly swap dates (only for symmetric change tasks).")


class OptimConfig(StrictModel):
    """Loss, optimiser, schedule and reproducibility."""

    epochs: int = Field(10, gt=0)
    batch_size: int = Field(8, gt=0)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    scheduler: Literal["cosine", "constant"] = "cosine"
    dice_weight: float = Field(1.0, ge=0, description="Loss = BCE + dice_weight * Dice.")
    pos_weight: float = Field(1.0, gt=0, description="BCE weight of changed pixels.")
    seed: int = 0
    num_threads: int | None = Field(None, gt=0, description="torch CPU threads (None: torch default).")
    amp: bool = Field(True, description="Mixed precision + channels_last; only ever used on CUDA.")
    device: Literal["auto", "cpu", "cuda"] = "auto"


class OutputConfig(StrictModel):
    """Where runs go and what the exported checkpoint is called."""

    dir: Path = Path("runs/train")
    name: str = "change-model"
    version: str = "0.1.0"
    half_precision_export: bool = Field(True, description="Store the exported weights as float16.")
    notes: str = ""


class TrainConfig(StrictModel):
    """A whole training run."""

    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    pixel_size_m: float | None = Field(None, description="Ground sampling distance of the data (m).")
    init_from: Path | None = Field(
        None, description="Checkpoint to fine-tune from (weights + normalisation)."
    )


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Load a YAML training config; relative ``data.root`` is taken relative to the current directory."""
    return load_yaml_config(path, TrainConfig, overrides)
