"""Saving and loading change-detection checkpoints (``<stem>.safetensors`` + ``<stem>.json``).

The JSON file is a :class:`~cspon_rs.models.card.ModelCard`. Loading rebuilds the network from the card
(``create_model(card.architecture, in_channels=card.in_channels, **card.init_kwargs)``), never from code
defaults, so a checkpoint keeps working when the defaults of the registry change.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file
from torch import nn

from cspon_rs.config import format_validation_error
from cspon_rs.errors import BandMismatchError, CheckpointError, CorruptFileError, MissingFileError
from cspon_rs.models.card import ModelCard
from cspon_rs.models.registry import create_model

__all__ = [
    "PAD_MULTIPLE",
    "SHIPPED",
    "SHIPPED_DIR",
    "LoadedModel",
    "checkpoint_paths",
    "default_checkpoint",
    "load_card",
    "load_checkpoint",
    "pad_to_multiple",
    "pick_default",
    "predict_proba",
    "resolve_checkpoint",
    "save_checkpoint",
    "shipped_checkpoint",
]

#: Input height/width must be a multiple of this (encoder output stride).
PAD_MULTIPLE = 32

#: Folder of the checkpoints shipped inside the package (``<stem>.safetensors`` + ``<stem>.json``).
SHIPPED_DIR = Path(__file__).parent / "checkpoints"
#: Checkpoints shipped inside the package, by the name users give as ``--checkpoint``.
SHIPPED: dict[str, str] = {
    "s2-rgbn": "s2_rgbn_effl0_siamunet",  # Sentinel-2 L1C B04,B03,B02,B08, 10 m
    "rgb": "rgb_effl0_siamunet",  # 8-bit RGB, 0.3-2 m
}
#: Bands that mark a near-infrared input (picks ``s2-rgbn`` for ``default``).
_NIR_NAMES = {"B08", "B8", "NIR", "B8A"}


def shipped_checkpoint(name: str) -> Path:
    """Path (``.safetensors``) of a shipped checkpoint by name (``rgb`` or ``s2-rgbn``).

    Raises:
        ValueError: Unknown name (the message lists the shipped ones).
    """
    if name not in SHIPPED:
        raise ValueError(f"no shipped checkpoint {name!r}; shipped: {sorted(SHIPPED)}")
    return SHIPPED_DIR / f"{SHIPPED[name]}.safetensors"


def pick_default(bands: int | Sequence[str | None] | None = None) -> tuple[str, str]:
    """Which shipped checkpoint ``default`` means for imagery with ``bands``, and why (one line).

    A near-infrared band by name (B08/NIR) or 4 bands picks ``s2-rgbn``; 3 bands pick ``rgb``; unknown
    bands (``None``) pick ``s2-rgbn``, the model of the bundled demo.

    Raises:
        BandMismatchError: No shipped checkpoint takes that many bands (the message says what to do).
    """
    if bands is None:
        return "s2-rgbn", "band layout unknown: the Sentinel-2 model"
    names = [n.upper() for n in bands if n] if not isinstance(bands, int) else []
    count = bands if isinstance(bands, int) else len(bands)
    if _NIR_NAMES & set(names):
        return "s2-rgbn", f"{count} bands including near-infrared"
    if count == 4:
        return "s2-rgbn", "4 bands (read as B04,B03,B02,B08)"
    if count == 3:
        return "rgb", "3 bands (read as R,G,B)"
    raise BandMismatchError(
        f"no shipped checkpoint takes {count} bands: choose --checkpoint rgb (3 bands R,G,B, 8-bit, 0.3-2 m) or "
        "s2-rgbn (4 bands Sentinel-2 B04,B03,B02,B08) and stack those bands first (gdal_translate -b ...)"
    )


def default_checkpoint(bands: int | Sequence[str | None] | None = None) -> Path:
    """Path (``.safetensors``) of the shipped checkpoint that fits ``bands`` (see :func:`pick_default`)."""
    return shipped_checkpoint(pick_default(bands)[0])


@dataclass
class LoadedModel:
    """A model in eval mode together with the card that says how to feed it."""

    model: nn.Module
    card: ModelCard
    path: Path
    device: torch.device


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """``(weights, card)`` paths for a checkpoint given as stem, ``.safetensors`` or ``.json`` path."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def resolve_checkpoint(checkpoint: str | Path, bands: int | Sequence[str | None] | None = None) -> Path:
    """Checkpoint path from a user value; the weights and card must exist.

    Args:
        checkpoint: A path (stem, ``.safetensors`` or ``.json``), a shipped name (``rgb``, ``s2-rgbn``) or
            ``default`` (the shipped checkpoint that fits ``bands``, see :func:`pick_default`).
        bands: Band count or names of the imagery, for ``default``.

    Raises:
        MissingFileError: The ``.safetensors`` weights (or the ``.json`` card) are missing.
        BandMismatchError: ``default`` for a band count no shipped checkpoint takes.
    """
    name = str(checkpoint)
    if name == "default":
        path = default_checkpoint(bands)
    elif name in SHIPPED:
        path = shipped_checkpoint(name)
    else:
        path = Path(checkpoint)
    weights, card = checkpoint_paths(path)
    for needed in (weights, card):
        if not needed.is_file():
            raise MissingFileError(
                f"{needed}: checkpoint file not found; a checkpoint is <name>.safetensors + <name>.json "
                f"(or a shipped name: default, {', '.join(sorted(SHIPPED))}; spectral for the non-learned detector)"
            )
    return weights.resolve()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    model: nn.Module, card: ModelCard, path_stem: str | Path, *, half: bool = False
) -> tuple[Path, Path]:
    """Write ``<stem>.safetensors`` (weights) and ``<stem>.json`` (card), each atomically.

    Args:
        model: The trained network (any device; weights are copied to CPU).
        card: Its model card (architecture, init_kwargs, bands, normalisation, threshold...).
        path_stem: Output path without suffix (a ``.safetensors``/``.json`` suffix is stripped).
        half: Store floating-point weights as float16 (halves the file; loading casts back to float32).

    Returns:
        ``(weights_path, card_path)``.
    """
    weights_path, card_path = checkpoint_paths(path_stem)
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        t = value.detach().to("cpu").contiguous()
        if half and t.is_floating_point():
            t = t.to(torch.float16)
        state[key] = t.clone()
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=weights_path.parent, prefix=f".{weights_path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": "cspon-rs", "card": card.name})
        os.replace(tmp, weights_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _atomic_write_bytes(card_path, (card.model_dump_json(indent=2) + "\n").encode("utf-8"))
    return weights_path, card_path


def load_card(path: str | Path) -> ModelCard:
    """Read and validate the JSON card of a checkpoint (stem, ``.json`` or ``.safetensors`` path)."""
    _, card_path = checkpoint_paths(path)
    if not card_path.is_file():
        raise MissingFileError(
            f"{card_path}: model card not found; a checkpoint is <name>.safetensors + <name>.json side by side"
        )
    try:
        data = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CorruptFileError(f"{card_path}: not a readable JSON model card ({exc})") from exc
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        raise CheckpointError(format_validation_error(exc, str(card_path))) from exc


def load_checkpoint(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    expected_bands: list[str] | tuple[str | None, ...] | int | None = None,
) -> LoadedModel:
    """Rebuild a model from its card and load its weights; the model is returned in eval mode.

    Args:
        path: Checkpoint stem, ``.safetensors`` or ``.json`` path.
        device: Torch device for the model.
        expected_bands: Bands of the imagery it will run on: a list of names (checked by name and
            order) or a band count. ``None`` skips the check.

    Raises:
        MissingFileError: Weights or card file missing.
        CheckpointError: Card invalid, unknown architecture, or weights that do not fit the architecture.
        BandMismatchError: ``expected_bands`` differ from the card's bands.
    """
    weights_path, card_path = checkpoint_paths(path)
    if not weights_path.is_file():
        raise MissingFileError(
            f"{weights_path}: checkpoint weights not found (card {card_path.name} "
            f"{'exists' if card_path.is_file() else 'missing too'})"
        )
    card = load_card(path)
    if expected_bands is not None:
        if isinstance(expected_bands, int):
            card.check_band_count(expected_bands, "input imagery")
        else:
            card.check_bands(tuple(expected_bands), "input imagery")
    try:
        model = create_model(card.architecture, in_channels=card.in_channels, **card.init_kwargs)
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(
            f"{card_path}: cannot build architecture {card.architecture!r} with {card.init_kwargs}: {exc}"
        ) from exc
    try:
        state = load_file(str(weights_path))
    except Exception as exc:  # safetensors raises its own error types
        raise CorruptFileError(f"{weights_path}: not a readable safetensors file ({exc})") from exc
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{weights_path}: weights do not fit {card.architecture} {card.init_kwargs}: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(
                f"{weights_path}: tensor {key} has shape {tuple(value.shape)}, "
                f"architecture expects {tuple(own[key].shape)}"
            )
        state[key] = value.to(own[key].dtype)
    model.load_state_dict(state)
    dev = torch.device(device)
    model.to(dev).eval()
    return LoadedModel(model=model, card=card, path=weights_path, device=dev)


def pad_to_multiple(array: np.ndarray, multiple: int = PAD_MULTIPLE) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad the last two axes up to a multiple of ``multiple``; returns the array and original (H, W)."""
    h, w = array.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return array, (h, w)
    pad = [(0, 0)] * (array.ndim - 2) + [(0, ph), (0, pw)]
    padded: np.ndarray = (
        np.pad(array, pad, mode="reflect") if h > ph and w > pw else np.pad(array, pad, mode="edge")
    )
    return padded, (h, w)


def predict_proba(
    loaded: LoadedModel,
    before: np.ndarray,
    after: np.ndarray,
    *,
    temperature: float | None = None,
    logits: bool = False,
) -> np.ndarray:
    """Change probability for one co-registered pair of raw-unit ``(C, H, W)`` arrays.

    The arrays are normalised with the card's statistics, reflect-padded to a multiple of 32, run through
    the model in one pass and turned into a calibrated probability ``sigmoid(logit / T)`` with the card's
    temperature ``T`` (1.0 for an uncalibrated card). For large scenes tile first (see ``inference``).

    Args:
        loaded: The checkpoint.
        before: Date-1 pixels, raw units.
        after: Date-2 pixels on the same grid.
        temperature: Override the card's temperature.
        logits: Return the raw network output (before temperature and sigmoid), e.g. to fit a temperature.

    Returns:
        ``(H, W)`` float32 probabilities in [0, 1] (or raw logits when ``logits``).

    Raises:
        BandMismatchError: The arrays' band count differs from the card's.
        ValueError: ``before`` and ``after`` shapes differ, or the temperature is not > 0.
    """
    if before.shape != after.shape:
        raise ValueError(f"before {before.shape} and after {after.shape} must have the same shape")
    if before.ndim != 3:
        raise ValueError(f"expected (bands, H, W) arrays, got shape {before.shape}")
    if before.shape[0] != loaded.card.in_channels:
        raise BandMismatchError(
            f"input has {before.shape[0]} bands but checkpoint {loaded.card.detector_id} expects "
            f"{loaded.card.in_channels} bands {loaded.card.bands}"
        )
    t = float(loaded.card.temperature if temperature is None else temperature)
    if not t > 0:
        raise ValueError(f"temperature must be > 0, got {t}")
    a, (h, w) = pad_to_multiple(loaded.card.normalize(before))
    b, _ = pad_to_multiple(loaded.card.normalize(after))
    with torch.inference_mode():
        ta = torch.from_numpy(np.ascontiguousarray(a))[None].to(loaded.device)
        tb = torch.from_numpy(np.ascontiguousarray(b))[None].to(loaded.device)
        raw = loaded.model(ta, tb).float()[0, 0, :h, :w]
        result = raw if logits else torch.sigmoid(raw / t)
    out: np.ndarray = result.cpu().numpy().astype(np.float32)
    return out
