"""Typed training configuration (``configs/train_*.yaml``).

The config only wires steps together; every step (dataset loading, augmentation, the loop, evaluation)
is a plain function usable without it. Unknown keys are rejected with the key named.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from cspon_rs.config import StrictModel, format_validation_error, load_yaml_config
from cspon_rs.errors import ConfigError, MissingFileError

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "OutputConfig",
    "PairSpec",
    "SourceConfig",
    "SyntheticConfig",
    "TrainConfig",
    "load_train_config",
    "resolve_paths",
    "train_config_from_dict",
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
    window: tuple[int, int, int, int] | None = Field(
        None,
        description="Read only this block of the date-1 grid: (col_off, row_off, width, height) in pixels "
        "(spatial splits within a scene; memory follows the block, not the scene).",
    )
    aoi: Path | None = Field(
        None,
        description="Polygons of the area that was labelled (any CRS); pixels outside are ignored by loss and "
        "metrics (partly labelled scenes).",
    )

    @model_validator(mode="after")
    def _one_label(self) -> PairSpec:
        if (self.label is None) == (self.label_vector is None):
            raise ValueError(f"pair {self.id!r}: give exactly one of 'label' (raster) or 'label_vector'")
        return self


class SourceConfig(StrictModel):
    """One labelled dataset (a LEVIR-style folder, an OSCD folder or a list of GeoTIFF pairs) and its splits.

    Relative paths in a YAML config are taken relative to the config file's folder.
    """

    name: str = Field("main", description="Source name; pair ids of extra sources read '<name>/<id>'.")
    kind: Literal["levir", "oscd", "geotiff_pairs", "standard"]
    root: Path = Field(description="Dataset folder (LEVIR: has A/ B/ label/; OSCD: has A/ B/ label/<city>/).")
    dataset: str | None = Field(
        None,
        description="kind=standard: a dataset by name, read from its authors' layout with their splits: levir-cd, "
        "levir-cd+, whu-cd, s2looking, sysu-cd, cdd, dsifn, oscd (B04,B03,B02,B08) or oscd-13.",
    )
    bands: list[str] | None = Field(
        None, description="Band names; OSCD: which Sentinel-2 bands to stack (default B04,B03,B02,B08)."
    )
    band_indexes: list[int] | None = Field(
        None, description="geotiff_pairs: 1-based bands to read from both dates, in this order (default: all)."
    )
    pairs: list[PairSpec] = Field(default_factory=list, description="Pairs for kind=geotiff_pairs.")
    train: Split = Field(None, description="Training ids or list file; default: all ids not in val/test.")
    val: Split = None
    test: Split = None
    label_threshold: int | None = Field(
        None,
        ge=0,
        description="Binarise labels as change = value > label_threshold (e.g. 127 for 0/255 labels with "
        "stray grey or JPEG-artefact values); default: the encoding is found from the values (0/1, 0/255, or "
        "OSCD's 1/2 with 2 = change).",
    )
    label_map: dict[int, Literal[0, 1, "ignore"]] | None = Field(
        None,
        description="Raw label value -> 0 (no change), 1 (change) or 'ignore' (unlabelled), for multi-class or "
        "other encodings, e.g. {0: 0, 1: 1, 2: 1, 3: ignore}; every value found must be named.",
    )
    ignore_value: int | None = Field(
        None, description="Label value meaning 'not labelled' (e.g. 255): excluded from loss and metrics."
    )

    @model_validator(mode="after")
    def _check_pairs(self) -> SourceConfig:
        if self.kind == "geotiff_pairs" and not self.pairs:
            raise ValueError("kind 'geotiff_pairs' needs a non-empty 'pairs' list")
        if self.kind == "standard":
            from cspon_rs.training.standard import STANDARD_DATASETS

            if (self.dataset or "").lower() not in STANDARD_DATASETS:
                raise ValueError(f"kind 'standard' needs 'dataset', one of {list(STANDARD_DATASETS)}")
        if self.label_map is not None and self.label_threshold is not None:
            raise ValueError("give either label_map or label_threshold, not both")
        return self


class SyntheticConfig(StrictModel):
    """Synthetic change pairs mixed into training batches (see :mod:`cspon_rs.training.synthetic`).

    * ``paste_fraction``: share of crops where labelled change instances of the *training* pairs (with a
      context margin and a feathered edge) are pasted into the date-2 copy of a host image.
    * ``nochange_fraction``: share of crops that pair a host with a photometrically / slightly geometrically
      perturbed copy of itself (hard no-change: season, sun, registration).
    Hosts are unlabelled images in the same units and bands as the training data; the date-1 and date-2
    images of the training pairs are always hosts too. Test images must never be listed.
    """

    paste_fraction: float = Field(0.25, ge=0.0, le=1.0)
    nochange_fraction: float = Field(0.1, ge=0.0, le=1.0)
    hosts: list[Path] = Field(default_factory=list, description="Image files or folders of unlabelled imagery.")
    host_bands: list[int] | None = Field(None, description="1-based bands to read from host files (default: all).")
    max_instances_per_crop: int = Field(4, gt=0)
    min_instance_px: int = Field(16, gt=0, description="Labelled components smaller than this are not pasted.")

    @model_validator(mode="after")
    def _fractions(self) -> SyntheticConfig:
        if self.paste_fraction + self.nochange_fraction > 1.0:
            raise ValueError(
                f"paste_fraction + nochange_fraction must be <= 1, got {self.paste_fraction + self.nochange_fraction}"
            )
        return self


class DataConfig(SourceConfig):
    """Where the training pairs come from and how they are split and cropped.

    The fields inherited from :class:`SourceConfig` describe the first source; ``extra_sources`` add more
    (all sources must share bands and pixel units).
    """

    extra_sources: list[SourceConfig] = Field(default_factory=list)
    synthetic: SyntheticConfig | None = None
    crop_size: int = Field(128, gt=0, description="Edge of random training crops (pixels, multiple of 32).")
    stream: bool = Field(
        False,
        description="geotiff_pairs: read every training crop from disk (rasterio windows) instead of loading "
        "the training scenes; memory stays flat in the scene size (validation/test pairs are still loaded: "
        "use block windows for large ones).",
    )
    crops_per_epoch: int = Field(256, gt=0)
    positive_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="Share of crops centred on a changed pixel (fights class imbalance)."
    )

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.crop_size % 32:
            raise ValueError(f"crop_size must be a multiple of 32, got {self.crop_size}")
        if self.stream and self.synthetic is not None:
            raise ValueError("data.stream cannot be combined with data.synthetic (pasting needs labels in memory)")
        names = [self.name] + [s.name for s in self.extra_sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must differ, got {names}")
        return self

    def sources(self) -> list[SourceConfig]:
        """Every source, the first one (this config's own fields) included."""
        own = SourceConfig.model_validate({k: getattr(self, k) for k in SourceConfig.model_fields})
        return [own, *self.extra_sources]


class ModelConfig(StrictModel):
    """Architecture (registry name), its create_model keyword arguments, encoder init and input scaling."""

    architecture: str = "siam_unet_lite"
    init_kwargs: dict[str, Any] = Field(default_factory=dict)
    pretrained: bool = Field(
        False, description="Start the encoder from the bundled ImageNet weights (tu-tf_efficientnet_lite0/1/2)."
    )
    normalization: Literal["band_stats", "imagenet_8bit", "band_stats_half"] = Field(
        "band_stats",
        description="band_stats: (x - mean) / std of the train split; imagenet_8bit: (x - 127.5) / 127.5, "
        "the scaling the ImageNet weights expect, for 8-bit RGB; band_stats_half: (x - mean) / (2 std), "
        "values mostly in [-1, 1] like ImageNet-scaled inputs, for other units (e.g. Sentinel-2 L1C).",
    )


class AugmentConfig(StrictModel):
    """Augmentation: geometric ops are shared by both dates and the mask, photometric jitter is per date."""

    flips: bool = True
    rot90: bool = True
    brightness: float = Field(0.1, ge=0.0, description="Max relative gain change per date (0.1 = +-10 %).")
    contrast: float = Field(0.1, ge=0.0, description="Max relative contrast change per date.")
    band_jitter: float = Field(
        0.0,
        ge=0.0,
        description="Max per-band relative gain and offset (normalised units), drawn per band and per date: the "
        "spectral shift between two acquisitions (one city's red median drops by a third while its NIR drops "
        "by a quarter). 0 = off.",
    )
    noise_std: float = Field(0.0, ge=0.0, description="Gaussian noise std in normalised units.")
    swap_dates: bool = Field(False, description="Randomly swap dates (only for symmetric change tasks).")
    scale_min: float = Field(1.0, gt=0.0, description="Smallest random resampling factor of a crop.")
    scale_max: float = Field(
        1.0,
        gt=0.0,
        description="Largest random resampling factor (0.5-2 lets a 0.5 m model see 0.25-1 m ground "
        "sampling; drawn log-uniformly per crop, both dates and the label together).",
    )

    @model_validator(mode="after")
    def _scales(self) -> AugmentConfig:
        if self.scale_min > self.scale_max:
            raise ValueError(f"scale_min {self.scale_min} > scale_max {self.scale_max}")
        return self


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
    encoder_lr_factor: float = Field(1.0, gt=0, description="Encoder learning rate = lr x this (e.g. 0.1).")
    warmup_epochs: int = Field(0, ge=0, description="Epochs with the encoder frozen (decoder warm-up).")
    freeze_encoder_bn: bool = Field(
        False, description="Keep the encoder's batch-norm statistics fixed (pretrained encoders, small batches)."
    )
    select_on: Literal["pooled_f1", "mean_f1", "last"] = Field(
        "pooled_f1",
        description="Validation score that picks the best epoch: F1 over all validation pixels, the mean of "
        "per-pair F1 (not dominated by one large pair), or 'last' (the last epoch; cross-validation folds, "
        "where the held-out pair must not choose anything).",
    )
    loader_workers: int = Field(0, ge=0, description="DataLoader worker processes drawing batches (0: in-process).")
    max_minutes: float | None = Field(
        None,
        gt=0,
        description="Wall-clock budget (minutes, from the start of the run, data loading included): training "
        "stops at the first step past it, then validates and saves.",
    )
    patience: int | None = Field(
        None, gt=0, description="Early stopping: stop after this many epochs without a better validation score."
    )


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
        None,
        description="Checkpoint to fine-tune from (weights + normalisation): a .safetensors path or a shipped "
        "name (rgb, s2-rgbn).",
    )


#: Checkpoint names that ``init_from`` takes besides paths (the shipped checkpoints).
SHIPPED_NAMES = ("default", "rgb", "s2-rgbn")


def _against(base: Path, p: Path) -> Path:
    return p if p.is_absolute() else base / p


def resolve_paths(config: TrainConfig, base: Path) -> TrainConfig:
    """Make every relative path of a config (data roots, hosts, init_from, output.dir) relative to ``base``."""
    data = config.data
    data.root = _against(base, data.root)
    for src in data.extra_sources:
        src.root = _against(base, src.root)
    if data.synthetic is not None:
        data.synthetic.hosts = [_against(base, h) for h in data.synthetic.hosts]
    if config.init_from is not None and str(config.init_from) not in SHIPPED_NAMES:
        config.init_from = _against(base, config.init_from)
    config.output.dir = _against(base, config.output.dir)
    return config


def train_config_from_dict(
    data: dict[str, Any], base: str | Path, source: str, sets: Sequence[str] = ()
) -> TrainConfig:
    """Validate a raw config mapping after applying ``--set`` items; relative paths resolve against ``base``.

    Raises:
        ConfigError: A bad ``--set`` item, or a config that does not validate (the message names the key).
    """
    from cspon_rs.training.overrides import apply_sets

    apply_sets(data, sets)
    try:
        config = TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source + (" (with --set)" if sets else ""))) from exc
    return resolve_paths(config, Path(base))


def load_train_config(
    path: str | Path, overrides: dict[str, Any] | None = None, sets: Sequence[str] = ()
) -> TrainConfig:
    """Load a YAML training config; relative paths in it are taken relative to the config file's folder.

    Pair files of ``geotiff_pairs`` sources stay relative to their source's ``root``.

    Args:
        path: The YAML file.
        overrides: Top-level keys replacing the file's.
        sets: ``--set key=value`` items (dotted keys, YAML values) applied before validation
            (:mod:`cspon_rs.training.overrides`); relative paths in them resolve like the file's.
    """
    if not sets:
        config = load_yaml_config(path, TrainConfig, overrides)
        return resolve_paths(config, Path(path).resolve().parent)
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return train_config_from_dict(data, path.resolve().parent, str(path), sets)
