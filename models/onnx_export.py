"""Exporting a checkpoint to ONNX (for ONNX Runtime), cached by the checkpoint's SHA-256.

The export uses PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``), which
needs only the ``onnx`` package and works offline. Inputs are the card-normalised before/after windows
``(N, C, H, W)`` float32 (H, W multiples of 32, any size), the output the change logits ``(N, 1, H, W)``.

Exports are cached in :func:`onnx_cache_dir` under a name derived from the checkpoint (``<stem>-<sha12>-
<precision>.onnx``) beside a copy of the model card whose ``onnx_export`` records the source weights'
SHA-256, the exporter and the opset, so a changed checkpoint can never reuse a stale export.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cspon_rs.errors import CheckpointError, ConfigError, MissingDependencyError

__all__ = ["OPSET", "ExportedModel", "export_checkpoint_onnx", "export_model_onnx", "export_onnx", "onnx_cache_dir"]

#: ONNX opset of the exports.
OPSET = 17
OnnxPrecision = Literal["fp32", "int8"]


@dataclass(frozen=True)
class ExportedModel:
    """An exported model: the ``.onnx`` file and the card written beside it (``<file>.json``)."""

    onnx_path: Path
    card_path: Path
    source_sha256: str
    precision: str


def onnx_cache_dir() -> Path:
    """Folder of cached exports: ``$CSPON_ONNX_CACHE``, else ``$XDG_CACHE_HOME/cspon_rs/onnx`` (``~/.cache``)."""
    env = os.environ.get("CSPON_ONNX_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cspon_rs" / "onnx"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            "the ONNX export needs the 'onnx' package: pip install onnx onnxruntime (or cspon-rs[onnx])"
        ) from exc


def export_model_onnx(model: Any, in_channels: int, path: Path, *, tile: int = 256) -> None:
    """Export a Siamese change model ``model(before, after) -> logits`` to ``path`` (dynamic N, H, W).

    Raises:
        CheckpointError: The model cannot be exported; the message names the first layer (module path and
            class) that cannot be exported on its own, and the exporter's reason.
    """
    import torch

    _require_onnx()
    model = model.eval().cpu()
    x = torch.zeros(1, in_channels, tile, tile)
    axes = {0: "n", 2: "h", 3: "w"}
    try:
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                model, (x, x), str(path), dynamo=False, opset_version=OPSET, input_names=["before", "after"],
                output_names=["logits"], dynamic_axes={"before": axes, "after": axes, "logits": axes},
            )
    except Exception as exc:  # the exporter raises many types (UnsupportedOperatorError, RuntimeError...)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        layer = _first_unexportable_layer(model, x)
        where = f"layer {layer[0]!r} ({layer[1]})" if layer else "a layer (not found by exporting modules alone)"
        raise CheckpointError(f"cannot export the model to ONNX: {where}: {reason}; use --backend torch") from exc


def _first_unexportable_layer(model: Any, x: Any) -> tuple[str, str] | None:
    """Export each leaf module alone (one per class, with the inputs it saw) and name the first that fails."""
    import tempfile as _tempfile

    import torch

    seen: dict[str, tuple[str, tuple[Any, ...]]] = {}
    hooks = []

    def record(name: str) -> Any:
        def hook(module: Any, args: tuple[Any, ...]) -> None:
            kind = type(module).__name__
            if kind not in seen and all(isinstance(a, torch.Tensor) for a in args):
                seen[kind] = (name, tuple(a.detach().clone() for a in args))

        return hook

    for name, module in model.named_modules():
        if name and not list(module.children()):
            hooks.append(module.register_forward_pre_hook(record(name)))
    try:
        with torch.no_grad():
            model(x, x)
    except Exception:  # the model itself fails: no layer to blame beyond the exporter's reason
        pass
    finally:
        for h in hooks:
            h.remove()
    modules = dict(model.named_modules())
    with _tempfile.TemporaryDirectory() as tmp:
        for kind, (name, args) in seen.items():
            try:
                with torch.no_grad():
                    torch.onnx.export(modules[name], args, str(Path(tmp) / "layer.onnx"), dynamo=False,
                                      opset_version=OPSET)
            except Exception:
                return name, kind
    return None


def export_onnx(
    checkpoint: str | Path, precision: OnnxPrecision = "fp32", *, cache_dir: Path | None = None
) -> ExportedModel:
    """The cached ONNX export of a checkpoint (exported now when missing or stale).

    Args:
        checkpoint: Checkpoint ``.safetensors`` (or its ``.json`` card / stem).
        precision: ``fp32``, or ``int8`` (ONNX Runtime dynamic quantisation of the convolutions and matmuls).
        cache_dir: Where exports live (default :func:`onnx_cache_dir`).

    Raises:
        MissingDependencyError: ``onnx`` (or ``onnxruntime`` for int8) is not installed.
        CheckpointError: A layer cannot be exported (named).
    """
    import torch

    from cspon_rs.models.card import OnnxExport
    from cspon_rs.models.checkpoint import checkpoint_paths, load_checkpoint

    if precision not in ("fp32", "int8"):
        raise ConfigError(f"ONNX precision must be 'fp32' or 'int8', got {precision!r}")
    _require_onnx()
    weights, _ = checkpoint_paths(checkpoint)
    sha = _sha256(weights)
    folder = cache_dir or onnx_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / f"{weights.stem}-{sha[:12]}-{precision}.onnx"
    card_path = onnx_path.with_suffix(".onnx.json")
    if onnx_path.is_file() and card_path.is_file():
        return ExportedModel(onnx_path, card_path, sha, precision)
    loaded = load_checkpoint(weights)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        fp32 = Path(tmp) / "model.onnx"
        export_model_onnx(loaded.model, loaded.card.in_channels, fp32, tile=max(64, min(loaded.card.tile_size, 256)))
        final = fp32
        if precision == "int8":
            try:
                from onnxruntime.quantization import QuantType, quantize_dynamic
            except ImportError as exc:
                raise MissingDependencyError("int8 export needs the 'onnxruntime' package: pip install "
                                             "onnxruntime") from exc
            final = Path(tmp) / "model.int8.onnx"
            quantize_dynamic(str(fp32), str(final), weight_type=QuantType.QInt8)
        record = OnnxExport(
            source_sha256=sha, onnx_sha256=_sha256(final), precision=precision, opset=OPSET,
            exporter=f"torch.onnx (TorchScript, dynamo=False) {torch.__version__}", inputs=["before", "after"],
            output="logits",
        )
        card = loaded.card.model_copy(update={"onnx_export": record})
        tmp_card = Path(tmp) / "card.json"
        tmp_card.write_text(card.model_dump_json(indent=2), encoding="utf-8")
        os.replace(final, onnx_path)  # atomic: concurrent workers exporting the same model are harmless
        os.replace(tmp_card, card_path)
    return ExportedModel(onnx_path, card_path, sha, precision)


def export_checkpoint_onnx(
    checkpoint: str | Path,
    out: str | Path,
    *,
    precision: OnnxPrecision = "fp32",
    tile: int = 128,
    seed: int = 0,
    atol: float | None = None,
) -> tuple[Path, Path, float]:
    """Export a checkpoint to ``out`` (``.onnx``) and check it against PyTorch on one window.

    The window is seeded noise in the card's normalised units (``tile`` x ``tile`` px, both dates); the largest
    absolute logit difference between ONNX Runtime and PyTorch is returned and recorded in the card written
    beside the model (``<out>.json``, ``metrics.onnx_check``). Both files are written atomically, mode 0644.

    Args:
        checkpoint: Checkpoint path or shipped name (``rgb``, ``s2-rgbn``).
        out: Output ``.onnx`` path.
        precision: ``fp32`` or ``int8`` (dynamic quantisation).
        tile: Edge of the check window (px, multiple of 32).
        seed: Seed of the check window.
        atol: Largest accepted logit difference (default 1e-3 for fp32, 1.0 for int8).

    Returns:
        ``(onnx_path, card_path, max_abs_logit_difference)``.

    Raises:
        CheckpointError: Export failed or ONNX Runtime disagrees with PyTorch beyond ``atol``.
    """
    import numpy as np
    import torch

    from cspon_rs.models.card import OnnxExport
    from cspon_rs.models.checkpoint import checkpoint_paths, load_checkpoint, resolve_checkpoint

    if precision not in ("fp32", "int8"):
        raise ConfigError(f"ONNX precision must be 'fp32' or 'int8', got {precision!r}")
    if tile % 32:
        raise ConfigError(f"check window must be a multiple of 32 px, got {tile}")
    weights, _ = checkpoint_paths(resolve_checkpoint(checkpoint))
    loaded = load_checkpoint(weights)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    mask = os.umask(0)
    os.umask(mask)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        fp32 = Path(tmp) / "model.onnx"
        export_model_onnx(loaded.model, loaded.card.in_channels, fp32, tile=tile)
        final = fp32
        if precision == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            final = Path(tmp) / "model.int8.onnx"
            quantize_dynamic(str(fp32), str(final), weight_type=QuantType.QInt8)
        import onnxruntime as ort

        rng = np.random.default_rng(seed)
        a = rng.normal(0, 1, (1, loaded.card.in_channels, tile, tile)).astype(np.float32)
        b = (a + rng.normal(0, 0.5, a.shape)).astype(np.float32)
        session = ort.InferenceSession(str(final), providers=["CPUExecutionProvider"])
        got = session.run(["logits"], {"before": a, "after": b})[0]
        with torch.no_grad():
            want = loaded.model(torch.from_numpy(a), torch.from_numpy(b)).numpy()
        diff = float(np.abs(np.asarray(got) - want).max())
        limit = atol if atol is not None else (1e-3 if precision == "fp32" else 1.0)
        if not diff <= limit:
            raise CheckpointError(
                f"{weights}: ONNX Runtime and PyTorch logits differ by {diff:.3g} on a {tile} px window "
                f"(limit {limit:g}); the export is not kept"
            )
        record = OnnxExport(
            source_sha256=_sha256(weights), onnx_sha256=_sha256(final), precision=precision, opset=OPSET,
            exporter=f"torch.onnx (TorchScript, dynamo=False) {torch.__version__}", inputs=["before", "after"],
            output="logits",
        )
        check = {"window_px": tile, "seed": seed, "max_abs_logit_difference": diff, "limit": limit}
        card = loaded.card.model_copy(update={"onnx_export": record, "metrics": {**loaded.card.metrics,
                                                                                  "onnx_check": check}})
        tmp_card = Path(tmp) / "card.json"
        tmp_card.write_text(card.model_dump_json(indent=2) + "\n", encoding="utf-8")
        card_path = target.with_name(target.name + ".json")
        for f in (final, tmp_card):
            os.chmod(f, 0o666 & ~mask)
        os.replace(final, target)
        os.replace(tmp_card, card_path)
    return target, card_path, diff
