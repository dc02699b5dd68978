"""create_model: every registered architecture, any band count, forward shape and determinism."""

from __future__ import annotations

import pytest
import torch

from cspon_rs.models.registry import create_model, model_names


@pytest.mark.parametrize("name", ["siam_unet", "siam_unet_lite", "early_fusion_unet"])
@pytest.mark.parametrize("bands", [3, 4, 13])
def test_forward_shape(name: str, bands: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, in_channels=bands).eval()
    before, after = torch.randn(2, bands, 64, 96), torch.randn(2, bands, 64, 96)
    with torch.no_grad():
        out = model(before, after)
    assert out.shape == (2, 1, 64, 96)
    assert torch.isfinite(out).all()


def test_registry_lists_required_models() -> None:
    assert {"siam_unet", "siam_unet_lite", "early_fusion_unet"} <= set(model_names())


@pytest.mark.parametrize("fusion", ["diff", "absdiff", "concat"])
def test_siam_fusion_options(fusion: str) -> None:
    model = create_model(
        "siam_unet",
        in_channels=4,
        encoder_name="resnet18",
        encoder_depth=3,
        decoder_channels=[32, 16, 8],
        fusion=fusion,
    ).eval()
    a = torch.randn(1, 4, 32, 32)
    with torch.no_grad():
        same = torch.sigmoid(model(a, a))
        swapped = (model(a, a * 2), model(a * 2, a))
    assert same.shape == (1, 1, 32, 32)
    if fusion == "absdiff":  # |b - a| is symmetric in the dates
        assert torch.allclose(swapped[0], swapped[1], atol=1e-5)
    else:
        assert not torch.allclose(swapped[0], swapped[1], atol=1e-5)


def test_lite_model_is_small() -> None:
    model = create_model("siam_unet_lite", in_channels=4)
    n = sum(p.numel() for p in model.parameters())
    assert n < 1_500_000, f"siam_unet_lite has {n} parameters"


def test_unknown_model_and_bad_options() -> None:
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        create_model("nope", in_channels=3)
    with pytest.raises(ValueError, match="fusion"):
        create_model("siam_unet", in_channels=3, fusion="sum")
    with pytest.raises(ValueError, match="in_channels"):
        create_model("siam_unet", in_channels=0)
