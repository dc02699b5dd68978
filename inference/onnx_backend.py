"""ONNX Runtime backend (``--backend onnx``): the exported checkpoint run by ONNX Runtime on the CPU.

The checkpoint is exported once (:func:`cspon_rs.models.onnx_export.export_onnx`, cached by its SHA-256)
and loaded once per process. The session uses all the cores it is given (``intra_op_num_threads``: the
process's share of the cores in a local Dask cluster, else every core) and full graph optimisation
(convolution + batch-norm + activation fusion). Inputs are normalised exactly as in the PyTorch path
(:func:`~cspon_rs.inference.predictors.normalize_windows`) and the logits calibrated with the card's
temperature, so both backends give the same probabilities up to float rounding.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import numpy as np

from cspon_rs.errors import ConfigError, MissingDependencyError
from cspon_rs.inference.predictors import calibrated_probability, normalize_windows

__all__ = ["OnnxPredictor", "load_onnx_predictor", "require_onnxruntime"]


def require_onnxruntime() -> Any:
    """The ``onnxruntime`` module, or :class:`MissingDependencyError` naming the package (one line)."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError(
            "--backend onnx needs the 'onnxruntime' package: pip install onnxruntime onnx"
        ) from exc
    return onnxruntime


class OnnxPredictor:
    """An exported checkpoint on an ONNX Runtime CPU session, as a :class:`~cspon_rs.inference.predictors.Predictor`.

    Args:
        onnx_path: Exported model.
        card: The checkpoint's model card (normalisation, temperature).
        batch_size: Windows per ``session.run``.
        threads: Intra-op threads; 0 = every core of the machine.
    """

    def __init__(self, onnx_path: str, card: Any, batch_size: int = 8, threads: int = 0) -> None:
        ort = require_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads) if threads > 0 else (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        self.card = card
        self.batch_size = max(1, int(batch_size))
        self.temperature = float(card.temperature)

    def __call__(self, before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Change probability ``(N, H, W)`` float32 for raw ``(N, C, H, W)`` windows (H, W multiples of 32)."""
        out = np.empty((before.shape[0], before.shape[2], before.shape[3]), dtype=np.float32)
        for start in range(0, before.shape[0], self.batch_size):
            sl = slice(start, start + self.batch_size)
            a = normalize_windows(self.card, before[sl], valid[sl])
            b = normalize_windows(self.card, after[sl], valid[sl])
            (logits,) = self.session.run(["logits"], {"before": a, "after": b})
            out[sl] = calibrated_probability(logits, self.temperature)
        return out


@lru_cache(maxsize=4)
def load_onnx_predictor(checkpoint: str, batch_size: int, precision: str, threads: int) -> OnnxPredictor:
    """Export (cached) and load a checkpoint for ONNX Runtime; once per process per setting."""
    from cspon_rs.models.checkpoint import load_card
    from cspon_rs.models.onnx_export import export_onnx

    require_onnxruntime()
    prec = "fp32" if precision == "auto" else precision
    if prec not in ("fp32", "int8"):
        raise ConfigError(f"--backend onnx runs precision fp32 or int8 on the CPU, got {precision!r}")
    exported = export_onnx(checkpoint, prec)  # type: ignore[arg-type]
    return OnnxPredictor(str(exported.onnx_path), load_card(checkpoint), batch_size=batch_size, threads=threads)
