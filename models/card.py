"""The model card: everything needed to rebuild and correctly feed a checkpoint.

A checkpoint is two files side by side: ``<name>.safetensors`` (weights) and ``<name>.json`` (this card).
Loading never relies on the code's defaults: architecture, encoder, bands, normalisation, tile size and
decision threshold all come from the card.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from cspon_rs.config import StrictModel
from cspon_rs.errors import BandMismatchError

__all__ = [
    "BAND_ALIASES",
    "QUANTILE_LEVELS",
    "BandStats",
    "InputContract",
    "ModelCard",
    "Normalization",
    "OnnxExport",
    "canonical_band",
    "same_bands",
]

#: Band names that mean the same band (any case): the canonical name first, then its aliases. Sentinel-2
#: numbers (B04), one-letter codes (R) and words (red) all name one band; ``B8A`` (narrow NIR) is kept apart.
BAND_ALIASES: dict[str, tuple[str, ...]] = {
    "red": ("RED", "R", "B04", "B4"),
    "green": ("GREEN", "G", "B03", "B3"),
    "blue": ("BLUE", "B", "B02", "B2"),
    "nir": ("NIR", "N", "B08", "B8"),
}
_ALIAS_OF = {alias: canon for canon, aliases in BAND_ALIASES.items() for alias in aliases}

#: Percentile levels (in %) of the per-band statistics stored in a card's input contract.
QUANTILE_LEVELS: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 98.0, 99.0, 99.5)


def canonical_band(name: str | None) -> str | None:
    """``red``/``B04``/``R`` -> ``"red"``, ``nir``/``B08``/``NIR`` -> ``"nir"``...; other names upper-cased."""
    if name is None or not str(name).strip():
        return None
    key = str(name).strip().upper()
    return _ALIAS_OF.get(key, key)


def same_bands(given: list[str] | tuple[str, ...], expected: list[str] | tuple[str, ...]) -> bool:
    """True when two band lists name the same bands in the same order (aliases allowed)."""
    return len(given) == len(expected) and all(
        canonical_band(a) == canonical_band(b) for a, b in zip(given, expected, strict=True)
    )


class Normalization(StrictModel):
    """Per-band normalisation applied to raw pixel values of both dates: ``(x - mean) / std``.

    ``mean`` and ``std`` are in the raster's own units (e.g. Sentinel-2 L1C reflectance x 10000, or 0-255
    for 8-bit RGB), one value per band in the card's band order.
    """

    mean: list[float]
    std: list[float]

    @model_validator(mode="after")
    def _same_length(self) -> Normalization:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values but std has {len(self.std)}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be > 0, got {self.std}")
        return self


class OnnxExport(StrictModel):
    """Provenance of an ONNX export of a checkpoint (written in the card stored beside the ``.onnx`` file)."""

    source_sha256: str = Field(description="SHA-256 of the checkpoint weights (.safetensors) that were exported.")
    onnx_sha256: str = Field(description="SHA-256 of the exported .onnx file.")
    precision: str = Field(description="'fp32', or 'int8' (ONNX Runtime dynamic quantisation of the fp32 graph).")
    opset: int = Field(description="ONNX opset version.")
    exporter: str = Field(description="e.g. 'torch.onnx (TorchScript, dynamo=False) 2.14.1'.")
    inputs: list[str] = Field(description="Input names, in order: normalised before and after windows (N, C, H, W).")
    output: str = Field(description="Output name: change logits (N, 1, H, W), before the card's temperature.")


class BandStats(StrictModel):
    """Robust statistics of one band of a checkpoint's training data (valid pixels, both dates pooled)."""

    band: str = Field(description="Band name as in the card's ``bands``.")
    quantiles: list[float] = Field(description="Values at the contract's ``quantile_levels``, raw units.")
    mean: float = Field(description="Mean, raw units.")
    std: float = Field(description="Standard deviation, raw units.")

    def at(self, level: float, levels: tuple[float, ...] | list[float]) -> float:
        """The value at percentile ``level`` (one of ``levels``)."""
        return float(self.quantiles[list(levels).index(level)])


class InputContract(StrictModel):
    """What a checkpoint was trained on, so any input can be measured against it and brought to it.

    ``cspon_rs.inference.radiometry`` compares each date with these statistics and maps it to them with the
    card's ``radiometry`` method before the card's ``normalization`` is applied.
    """

    dtype: str = Field(description="Data type of the training rasters, e.g. 'uint16' (S2 L1C) or 'uint8'.")
    value_range: tuple[float, float] = Field(description="Nominal value range of that type/product, raw units.")
    units: str = Field("", description="What the values are, e.g. 'L1C reflectance x 10000'.")
    quantile_levels: list[float] = Field(default_factory=lambda: list(QUANTILE_LEVELS),
                                         description="Percentile levels (%) of ``band_stats[*].quantiles``.")
    band_stats: list[BandStats] = Field(description="One entry per band, in the card's band order.")
    pooled_over: str = Field("", description="The pairs and pixels the statistics were computed on.")
    radiometry: str = Field(
        "percentile",
        description="Default per-scene radiometric normalisation (cspon_rs.inference.radiometry.METHODS), "
        "chosen on validation pairs.",
    )
    radiometry_validation: dict[str, Any] = Field(
        default_factory=dict, description="How the default was chosen: pairs and figures per method."
    )

    @model_validator(mode="after")
    def _levels_match(self) -> InputContract:
        for bs in self.band_stats:
            if len(bs.quantiles) != len(self.quantile_levels):
                raise ValueError(f"band {bs.band}: {len(bs.quantiles)} quantiles for "
                                 f"{len(self.quantile_levels)} levels")
        return self

    def quantiles(self) -> np.ndarray:
        """``(bands, levels)`` float64 quantile table."""
        return np.asarray([bs.quantiles for bs in self.band_stats], dtype=np.float64)

    def value(self, level: float) -> np.ndarray:
        """Per-band value at percentile ``level`` (a member of ``quantile_levels``)."""
        return self.quantiles()[:, list(self.quantile_levels).index(level)]


class ModelCard(StrictModel):
    """Architecture, inputs and provenance of a change-detection checkpoint."""

    format_version: int = 1
    name: str = Field(description="Checkpoint id, e.g. 'oscd-s2-rgbn-siamunet'.")
    version: str = Field(description="Checkpoint version, e.g. '2026.11.1'.")
    architecture: str = Field(description="Registry name passed to create_model, e.g. 'siam_unet'.")
    init_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of create_model (encoder, channels, fusion...)."
    )
    bands: list[str] = Field(description="Band names per date, in input order, e.g. ['B04','B03','B02','B08'].")
    normalization: Normalization
    tile_size: int = Field(256, gt=0, description="Tile edge in pixels the model was trained on.")
    pixel_size_m: float | None = Field(None, description="Ground sampling distance of the training data (m).")
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="Decision threshold on the change probability.")
    temperature: float = Field(
        1.0,
        gt=0,
        description="Temperature T of the calibrated probability sigmoid(logit / T), fitted on validation "
        "pixels (cspon-rs calibrate); 1.0 = uncalibrated.",
    )
    training_data: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    notes: str = ""
    onnx_export: OnnxExport | None = Field(
        None, description="Set only in the card beside an exported .onnx model (cspon_rs.models.onnx_export)."
    )
    input: InputContract | None = Field(
        None,
        description="Value range and per-band statistics of the training data and the default radiometric "
        "normalisation (models/card_stats.py); None on older cards (then inputs are only checked, not mapped).",
    )
    warning_classifier: dict[str, Any] | None = Field(
        None,
        description="The warning classifier shipped beside the checkpoint (<name>.classifier.json): file, "
        "sha256, what it was fitted on, its operating point and out-of-fold figures (cspon-rs classifier fit); "
        "None when the checkpoint has none (confidence = mean change probability).",
    )

    @field_validator("bands")
    @classmethod
    def _bands_not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("a checkpoint must declare at least one band")
        return value

    @model_validator(mode="after")
    def _norm_matches_bands(self) -> ModelCard:
        if len(self.normalization.mean) != len(self.bands):
            raise ValueError(
                f"normalization has {len(self.normalization.mean)} values for {len(self.bands)} bands {self.bands}"
            )
        if self.input is not None and len(self.input.band_stats) != len(self.bands):
            raise ValueError(f"input.band_stats has {len(self.input.band_stats)} bands for {self.bands}")
        return self

    @property
    def in_channels(self) -> int:
        """Bands per date."""
        return len(self.bands)

    @property
    def detector_id(self) -> str:
        """Short id stored with every change patch: ``name@version``."""
        return f"{self.name}@{self.version}"

    def check_band_count(self, count: int, source: str) -> None:
        """Raise :class:`BandMismatchError` when a raster's band count differs from the card's."""
        if count != self.in_channels:
            raise BandMismatchError(
                f"{source}: has {count} bands but checkpoint {self.detector_id} expects "
                f"{self.in_channels} bands {self.bands}; select those bands (e.g. gdal_translate -b ...)"
            )

    def check_bands(self, names: list[str] | tuple[str | None, ...], source: str) -> None:
        """Raise :class:`BandMismatchError` when named bands differ from the card's (unnamed bands pass)."""
        self.check_band_count(len(names), source)
        given = [n for n in names if n]
        if len(given) == len(names) and not same_bands(given, self.bands):
            raise BandMismatchError(
                f"{source}: bands {list(names)} do not match checkpoint {self.detector_id}, "
                f"which expects {self.bands} in that order (aliases: red = B04 = R, green = B03 = G, "
                "blue = B02 = B, nir = B08 = NIR)"
            )

    def band_index(self, name: str) -> int | None:
        """Index of a band in the card's order by any alias (``"red"``, ``"B04"``, ``"R"``), else None."""
        want = canonical_band(name)
        for i, b in enumerate(self.bands):
            if canonical_band(b) == want:
                return i
        return None

    def normalize(self, array: np.ndarray) -> np.ndarray:
        """Normalise a ``(bands, H, W)`` or ``(N, bands, H, W)`` array of raw pixel values to float32."""
        mean = np.asarray(self.normalization.mean, dtype=np.float32)
        std = np.asarray(self.normalization.std, dtype=np.float32)
        shape = (-1, 1, 1) if array.ndim == 3 else (1, -1, 1, 1)
        out: np.ndarray = (array.astype(np.float32) - mean.reshape(shape)) / std.reshape(shape)
        return out
