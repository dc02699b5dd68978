"""Siamese change models on segmentation-models-pytorch decoders: UNet++, FPN, DeepLabV3+, UPerNet.

One encoder, shared by both dates (any smp encoder; the offline ImageNet ``tu-tf_efficientnet_lite0/1/2``
with ``pretrained=True``), the two dates' features fused level by level (``absdiff``: |after - before|,
symmetric in the dates; ``diff``: after - before, can learn direction), then the smp decoder and head of the
chosen architecture. Registered as ``siam_unetpp``, ``siam_fpn``, ``siam_deeplabv3plus`` and ``siam_upernet``.
"""

from __future__ import annotations

from typing import Any, Literal

import segmentation_models_pytorch as smp
import torch
from torch import nn

__all__ = ["SMP_DECODERS", "SiamSmp"]

#: Registry name -> smp architecture.
SMP_DECODERS = {
    "siam_unetpp": "UnetPlusPlus",
    "siam_fpn": "FPN",
    "siam_deeplabv3plus": "DeepLabV3Plus",
    "siam_upernet": "UPerNet",
}


class SiamSmp(nn.Module):
    """A Siamese encoder with per-level ``absdiff``/``diff`` fusion and an smp decoder + segmentation head.

    Args:
        in_channels: Bands per date.
        arch: smp architecture name (``UnetPlusPlus``, ``FPN``, ``DeepLabV3Plus``, ``UPerNet``).
        encoder_name: smp encoder (e.g. ``tu-tf_efficientnet_lite0``, ``mobilenet_v2``, ``resnet18``).
        encoder_depth: Encoder stages (5 for FPN/DeepLabV3+/UPerNet; 3-5 for UNet++).
        fusion: ``absdiff`` or ``diff`` (channel counts stay those the smp decoder expects).
        decoder_kwargs: Further smp keyword arguments (``decoder_channels``...).
    """

    def __init__(
        self,
        in_channels: int,
        *,
        arch: str,
        encoder_name: str = "tu-tf_efficientnet_lite0",
        encoder_depth: int = 5,
        fusion: Literal["absdiff", "diff"] = "absdiff",
        **decoder_kwargs: Any,
    ) -> None:
        super().__init__()
        if fusion not in ("absdiff", "diff"):
            raise ValueError(f"fusion must be 'absdiff' or 'diff' for smp decoders, got {fusion!r}")
        net = smp.create_model(
            arch,
            encoder_name=encoder_name,
            encoder_weights=None,
            encoder_depth=encoder_depth,
            in_channels=in_channels,
            classes=1,
            **decoder_kwargs,
        )
        self.fusion = fusion
        self.encoder_name = encoder_name
        self.encoder = net.encoder
        self.decoder = net.decoder
        self.head = net.segmentation_head

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """Change logits ``(N, 1, H, W)`` for two ``(N, C, H, W)`` normalised dates (H, W multiples of 32)."""
        n = before.shape[0]
        feats = self.encoder(torch.cat([before, after], dim=0))
        fused = [torch.abs(f[n:] - f[:n]) if self.fusion == "absdiff" else f[n:] - f[:n] for f in feats]
        out: torch.Tensor = self.head(self.decoder(fused))
        return out
