"""Typed settings of ``cspon-rs detect`` (``configs/detect.yaml``); they only wire :func:`detect_pair`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from cspon_rs.config import StrictModel
from cspon_rs.inference.suppress import SuppressConfig

__all__ = ["DetectConfig"]


class DetectConfig(StrictModel):
    """Keyword arguments of :func:`cspon_rs.inference.detect.detect_pair` that a bureau sets once.

    ``None`` means "take it from the model card" (tile size, threshold) or the documented default.
    """

    checkpoint: str = Field("default", description="Checkpoint path, 'default' (shipped) or 'spectral'.")
    tile_size: int | None = Field(None, gt=0, description="Model window edge, px (multiple of 32; default 1024).")
    overlap: int | None = Field(None, ge=0, description="Window overlap, px (default min(32, tile_size // 4)).")
    batch_size: int = Field(8, gt=0, description="Windows per forward pass.")
    block_size: int = Field(2048, ge=64, description="Core block edge per task, px.")
    blend: Literal["cosine", "gaussian", "uniform"] = "cosine"
    workers: int = Field(1, ge=1, description="Dask worker processes (1 = no Dask).")
    scheduler: str | None = Field(None, description="tcp://host:port of a Dask scheduler, or 'local'.")
    threshold: float | None = Field(None, gt=0.0, lt=1.0, description="Mask threshold on the probability.")
    min_area_m2: float | None = Field(
        None, ge=0.0, description="Smallest patch written, m² (default min(200, the auto MMU of the pixel size))."
    )
    radiometry: Literal["card", "none", "gain", "standardize", "percentile", "relative"] = Field(
        "card", description="Per-scene radiometric normalisation (cspon_rs.inference.radiometry); 'card' = the "
        "checkpoint's default, chosen on validation.",
    )
    simplify_m: float = Field(1.0, ge=0.0, description="Simplification tolerance, m.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    backend: Literal["auto", "torch", "onnx"] = Field(
        "auto", description="Model runtime: auto (ONNX Runtime on the CPU when installed), torch or onnx."
    )
    precision: Literal["auto", "fp32", "fp16", "bf16", "int8"] = Field(
        "auto", description="auto (fp16 autocast on CUDA, fp32 on CPU), fp32, fp16/bf16 (CUDA), int8 (onnx)."
    )
    fallback_cpu: bool = Field(False, description="With device cuda and no GPU: run on the CPU instead of failing.")
    classifier: str = Field(
        "auto",
        description="Warning classifier: 'auto' (the checkpoint's <name>.classifier.json when it has one), a "
        "path, or 'none' (confidence = mean change probability).",
    )
    min_confidence: float | None = Field(
        None, ge=0.0, le=1.0, description="Operating point: patches the classifier scores below this are "
        "suppressed (kept, suppressed_by = classifier); default: the classifier's own, chosen on validation.",
    )
    suppress: SuppressConfig = Field(
        default_factory=SuppressConfig,
        description="False-alarm suppression cues (cspon_rs.inference.suppress); suppressed patches are kept, "
        "flagged in suppressed_by, and never become warnings.",
    )

    def detect_kwargs(self) -> dict[str, Any]:
        """The settings as keyword arguments of ``detect_pair``."""
        return {**self.model_dump(exclude={"suppress"}), "suppress": self.suppress}
