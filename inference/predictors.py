"""Detectors that turn a batch of before/after windows into change probabilities.

Two kinds share one calling convention, ``predictor(before, after, valid) -> prob``:

* :class:`ModelPredictor` -- a trained checkpoint (``cspon_rs.models.checkpoint.load_checkpoint``),
  normalised with its model card, run on CUDA (half precision) when available, CPU otherwise.
* :class:`SpectralPredictor` -- the non-learned CVA baseline (``models/baselines.py``). Its per-band scale
  and Otsu threshold are *scene-wide* parameters, estimated once from a decimated read of the whole
  aligned pair (:func:`spectral_parameters`) and then applied window by window.

Workers describe a detector with a small picklable :class:`DetectorSpec` and get the predictor from
:func:`get_predictor`, which caches it per process: a checkpoint is loaded once per worker, never shipped
with each task.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from cspon_rs.models.baselines import change_magnitude, magnitude_to_probability, otsu_threshold

__all__ = [
    "MAX_BATCH_PX",
    "SPECTRAL",
    "SPECTRAL_DETECTOR_ID",
    "Backend",
    "DetectorSpec",
    "ModelPredictor",
    "Precision",
    "Predictor",
    "SpectralPredictor",
    "batch_windows",
    "calibrated_probability",
    "check_backend",
    "check_device",
    "get_predictor",
    "normalize_windows",
    "resolve_device",
    "spectral_parameters",
]

#: Value of ``checkpoint`` that selects the non-learned CVA + Otsu detector.
SPECTRAL = "spectral"
#: ``detector`` column value written for patches found by the spectral detector.
SPECTRAL_DETECTOR_ID = "spectral-cva-otsu"

DeviceName = Literal["auto", "cpu", "cuda"]
#: Model runtime: PyTorch eager, the exported model on ONNX Runtime, or ``auto`` (ONNX Runtime on the CPU when
#: it is installed and the model exports, PyTorch otherwise and on CUDA).
Backend = Literal["auto", "torch", "onnx"]
#: Arithmetic: ``auto`` = float16 autocast on CUDA, float32 on CPU; ``int8`` = ONNX Runtime dynamic quantisation.
Precision = Literal["auto", "fp32", "fp16", "bf16", "int8"]
#: Most window pixels in one forward pass (keeps memory flat when windows are large), by device type.
MAX_BATCH_PX = {"cpu": 1024 * 1024, "cuda": 16 * 1024 * 1024}


class Predictor(Protocol):
    """Callable mapping raw ``(N, C, H, W)`` before/after windows and ``(N, H, W)`` validity to probabilities."""

    def __call__(self, before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Change probability ``(N, H, W)`` float32 in [0, 1]; invalid pixels may hold any value."""
        ...


@dataclass(frozen=True)
class DetectorSpec:
    """Picklable description of a detector, sent to workers instead of the model itself.

    Attributes:
        checkpoint: Path of a checkpoint (``.safetensors`` or its ``.json`` card), or ``"spectral"``.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``; resolved on the worker (:func:`resolve_device`).
        batch_size: Windows per forward pass.
        spectral_scale: Per-band divisor of the CVA (spectral detector only), raw pixel units.
        spectral_threshold: Otsu threshold on the CVA magnitude (spectral detector only).
        torch_threads: CPU threads the model runtime may use in the process that runs it; 0 leaves the
            process default (Dask worker processes start with 1, see :func:`torch_threads_per_worker`).
        backend: ``"torch"`` or ``"onnx"`` (:mod:`cspon_rs.inference.onnx_backend`).
        precision: See :data:`Precision`.
    """

    checkpoint: str
    device: str = "auto"
    batch_size: int = 8
    spectral_scale: tuple[float, ...] = ()
    spectral_threshold: float = math.inf
    torch_threads: int = 0
    backend: str = "torch"
    precision: str = "auto"

    @property
    def is_spectral(self) -> bool:
        """True for the non-learned CVA detector."""
        return self.checkpoint == SPECTRAL


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a CUDA GPU is visible, else ``"cpu"``; other values are checked and returned."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        from cspon_rs.errors import ConfigError

        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        from cspon_rs.errors import ConfigError

        raise ConfigError(f"device {device!r} requested but no CUDA GPU is available; use --device cpu "
                          "(or --fallback-cpu to run on the CPU when no GPU is found)")
    return device


def check_device(device: str, *, fallback_cpu: bool = False) -> str:
    """Check a device request on the client before any work is sent out.

    ``cuda`` without a visible GPU is a :class:`~cspon_rs.errors.ConfigError` (one line), unless
    ``fallback_cpu``: then ``"cpu"`` is returned and an :class:`InferenceWarning`-style ``UserWarning`` is
    emitted. ``auto`` is left for each worker to resolve (a remote worker may have a GPU).
    """
    if device == "auto" or device == "cpu":
        return device
    try:
        return resolve_device(device)
    except ValueError:
        if not fallback_cpu or not device.startswith("cuda"):
            raise
        import warnings

        warnings.warn(f"device {device!r} requested but no CUDA GPU is available: running on the CPU",
                      UserWarning, stacklevel=3)
        return "cpu"


def check_backend(spec: DetectorSpec) -> None:
    """Raise :class:`~cspon_rs.errors.MissingDependencyError` / ``ConfigError`` for an unusable backend."""
    from cspon_rs.errors import ConfigError

    if spec.backend not in ("torch", "onnx"):
        raise ConfigError(f"backend must be 'torch' or 'onnx', got {spec.backend!r}")
    if spec.precision not in ("auto", "fp32", "fp16", "bf16", "int8"):
        raise ConfigError(f"precision must be auto, fp32, fp16, bf16 or int8, got {spec.precision!r}")
    if spec.backend == "onnx":
        from cspon_rs.inference.onnx_backend import require_onnxruntime

        require_onnxruntime()
        if spec.precision in ("bf16",):
            raise ConfigError("precision bf16 needs --backend torch on CUDA; ONNX Runtime runs fp32, fp16 or int8")
    elif spec.precision == "int8":
        raise ConfigError("precision int8 needs --backend onnx (ONNX Runtime dynamic quantisation)")


def batch_windows(spec: DetectorSpec, tile_size: int, device: str) -> int:
    """Windows per forward pass: ``spec.batch_size``, capped so a pass holds at most :data:`MAX_BATCH_PX` pixels."""
    budget = MAX_BATCH_PX["cuda" if device.startswith("cuda") else "cpu"]
    return max(1, min(spec.batch_size, budget // max(1, tile_size * tile_size)))


def normalize_windows(card: Any, raw: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Card-normalised ``(N, C, H, W)`` float32 windows, invalid pixels set to 0 (the training mean)."""
    x = card.normalize(raw)
    x[np.broadcast_to(~valid[:, None, :, :], x.shape)] = 0.0
    return np.ascontiguousarray(x)


def calibrated_probability(logits: np.ndarray, temperature: float) -> np.ndarray:
    """``sigmoid(logit / T)`` of ``(N, 1, H, W)`` logits as ``(N, H, W)`` float32."""
    z = logits[:, 0].astype(np.float32) / np.float32(temperature)
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * z))  # = sigmoid(z), without overflow warnings
    return out.astype(np.float32, copy=False)


class ModelPredictor:
    """A loaded checkpoint wrapped as a :class:`Predictor` (PyTorch eager).

    Inputs are normalised with the card's per-band mean/std; invalid pixels are set to 0 after
    normalisation (the training mean). On CUDA the batch is copied from pinned memory and the forward
    pass runs under float16 (``precision="auto"``/``"fp16"``) or bfloat16 autocast; the returned
    probabilities are always float32 and calibrated with the card's temperature, ``sigmoid(logit / T)``
    (the card's threshold is in that space).
    """

    def __init__(self, loaded: Any, device: str = "cpu", batch_size: int = 8, precision: str = "auto") -> None:
        import torch

        self.card = loaded.card
        self.device = torch.device(device)
        self.model = loaded.model.to(self.device).eval()
        self.batch_size = max(1, int(batch_size))
        self.temperature = float(self.card.temperature)
        cuda = self.device.type == "cuda"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "auto": torch.float16}.get(precision)
        self.use_amp = cuda and self.amp_dtype is not None
        if not cuda and precision in ("fp16", "bf16"):
            from cspon_rs.errors import ConfigError

            raise ConfigError(f"precision {precision} needs a CUDA device with --backend torch; use fp32 on CPU")

    def __call__(self, before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Change probability for ``(N, C, H, W)`` raw windows (H, W multiples of 32)."""
        import torch

        out = np.empty((before.shape[0], before.shape[2], before.shape[3]), dtype=np.float32)
        cuda = self.device.type == "cuda"
        for start in range(0, before.shape[0], self.batch_size):
            sl = slice(start, start + self.batch_size)
            ta = torch.from_numpy(normalize_windows(self.card, before[sl], valid[sl]))
            tb = torch.from_numpy(normalize_windows(self.card, after[sl], valid[sl]))
            if cuda:
                ta = ta.pin_memory().to(self.device, non_blocking=True)
                tb = tb.pin_memory().to(self.device, non_blocking=True)
            with torch.inference_mode(), torch.autocast(device_type="cuda", dtype=self.amp_dtype or torch.float16,
                                                        enabled=self.use_amp):
                logits = self.model(ta, tb)
                prob = torch.sigmoid(logits.float() / self.temperature)[:, 0]
            out[sl] = prob.cpu().numpy()
        return out


class SpectralPredictor:
    """CVA magnitude with scene-wide per-band scale and Otsu threshold, mapped to a pseudo-probability."""

    def __init__(self, scale: tuple[float, ...], threshold: float) -> None:
        self.scale = np.asarray(scale, dtype=np.float32)
        self.threshold = float(threshold)

    def __call__(self, before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Pseudo-probability (0.5 at the Otsu threshold) for ``(N, C, H, W)`` raw windows."""
        out = np.empty((before.shape[0], before.shape[2], before.shape[3]), dtype=np.float32)
        for i in range(before.shape[0]):
            mag = change_magnitude(before[i], after[i], scale=self.scale)
            out[i] = magnitude_to_probability(mag, self.threshold)
        return out


@lru_cache(maxsize=4)
def _load_model_predictor(checkpoint: str, device: str, batch_size: int, precision: str = "auto") -> ModelPredictor:
    from cspon_rs.models.checkpoint import load_checkpoint

    return ModelPredictor(load_checkpoint(checkpoint, device=device), device=device, batch_size=batch_size,
                          precision=precision)


def torch_threads_per_worker(workers: int) -> int:
    """CPU threads for PyTorch in each of ``workers`` local worker processes: the cores shared out evenly.

    Dask starts worker processes with ``OMP_NUM_THREADS=1``, so without this one local worker on an
    8-core machine would run the model on a single core.
    """
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def get_predictor(spec: DetectorSpec) -> Predictor:
    """The predictor for ``spec``; checkpoints are loaded once per process and cached (LRU of 4)."""
    if spec.is_spectral:
        return SpectralPredictor(spec.spectral_scale, spec.spectral_threshold)
    path = str(Path(spec.checkpoint).resolve())
    if spec.backend == "onnx":
        from cspon_rs.inference.onnx_backend import load_onnx_predictor

        onnx_predictor: Predictor = load_onnx_predictor(path, spec.batch_size, spec.precision, spec.torch_threads)
        return onnx_predictor
    if spec.torch_threads > 0:
        import torch

        if torch.get_num_threads() != spec.torch_threads:
            torch.set_num_threads(spec.torch_threads)
    return _load_model_predictor(path, resolve_device(spec.device), spec.batch_size, spec.precision)


def spectral_parameters(
    before: np.ndarray, after: np.ndarray, valid: np.ndarray
) -> tuple[tuple[float, ...], float]:
    """Scene-wide CVA parameters from (decimated) whole-scene arrays.

    Args:
        before: ``(C, H, W)`` date-1 pixels, raw units.
        after: ``(C, H, W)`` date-2 pixels on the same grid.
        valid: ``(H, W)`` pixels to use (valid in both dates and inside the AOI).

    Returns:
        ``(scale, threshold)``: per-band standard deviation over both dates' valid pixels (raw units) and
        the Otsu threshold of the resulting magnitude (``inf`` when nothing can be split).
    """
    if not valid.any():
        return tuple(1.0 for _ in range(before.shape[0])), math.inf
    a = before.astype(np.float32)
    b = after.astype(np.float32)
    stacked = np.concatenate([a[:, valid], b[:, valid]], axis=1)
    scale = stacked.std(axis=1) + 1e-6
    magnitude = change_magnitude(a, b, scale=scale)
    threshold = otsu_threshold(magnitude, valid)
    return tuple(float(s) for s in scale), threshold
