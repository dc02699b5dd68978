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

__all__ = ["ModelCard", "Normalization", "OnnxExport"]


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
        if len(given) == len(names) and [n.upper() for n in given] != [b.upper() for b in self.bands]:
            raise BandMismatchError(
                f"{source}: bands {list(names)} do not match checkpoint {self.detector_id}, "
                f"which expects {self.bands} in that order"
            )

    def normalize(self, array: np.ndarray) -> np.ndarray:
        """Normalise a ``(bands, H, W)`` or ``(N, bands, H, W)`` array of raw pixel values to float32."""
        mean = np.asarray(self.normalization.mean, dtype=np.float32)
        std = np.asarray(self.normalization.std, dtype=np.float32)
        shape = (-1, 1, 1) if array.ndim == 3 else (1, -1, 1, 1)
        out: np.ndarray = (array.astype(np.float32) - mean.reshape(shape)) / std.reshape(shape)
        return out
