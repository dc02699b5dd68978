"""TinyCD (Codegoni, Lombardi and Ferrari, "TINYCD: A (not so) deep learning model for change detection",
Neural Computing and Applications, 2023; arXiv:2207.13159), written from the paper.

The paper's pieces, as implemented here:

* a **Siamese backbone** cut after a few stages (the paper: the first 4 blocks of EfficientNet-B4; here any smp
  encoder, by default the first 3 stages of EfficientNet-Lite0, stride 8, whose ImageNet weights ship offline);
* the **Mixing Block** at every level: the two dates' feature maps are interleaved channel by channel
  (``a_1, b_1, a_2, b_2, ...``) and a grouped 3x3 convolution with one group per channel pair mixes each
  channel with its other-date twin, followed by PReLU and instance normalisation;
* the **Mix and Attention Mask Block** in the up path: the coarser decoder output, upsampled, gives a spatial
  attention mask (1x1 convolution + sigmoid) that weights the mixed features of the finer level, which are then
  merged with it;
* a **pixel-wise MLP** classifier (1x1 convolutions) on the full-resolution map.
"""

from __future__ import annotations

from collections.abc import Sequence

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MixingBlock", "TinyCD"]


class MixingBlock(nn.Module):
    """Interleave the channels of two ``C``-channel maps and mix each pair with a grouped 3x3 convolution."""

    def __init__(self, channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        out = out_channels or channels
        groups = channels if out % channels == 0 else 1
        self.conv = nn.Conv2d(2 * channels, out, kernel_size=3, padding=1, groups=groups)
        self.act = nn.PReLU()
        self.norm = nn.InstanceNorm2d(out, affine=True)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` x2 -> ``(N, out, H, W)``."""
        n, c, h, w = a.shape
        mixed = torch.stack([a, b], dim=2).reshape(n, 2 * c, h, w)  # a_1, b_1, a_2, b_2, ...
        out: torch.Tensor = self.norm(self.act(self.conv(mixed)))
        return out


class _UpMask(nn.Module):
    """Up path step: attention mask from the coarser map weights the finer mixed features; then merge."""

    def __init__(self, coarse: int, fine: int) -> None:
        super().__init__()
        self.mask = nn.Conv2d(coarse, 1, kernel_size=1)
        self.merge = nn.Sequential(
            nn.Conv2d(coarse + fine, fine, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(fine),
            nn.PReLU(),
        )

    def forward(self, coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        weighted = fine * torch.sigmoid(self.mask(up))
        out: torch.Tensor = self.merge(torch.cat([up, weighted], dim=1))
        return out


class TinyCD(nn.Module):
    """TinyCD change model (see the module docstring).

    Args:
        in_channels: Bands per date.
        encoder_name: smp encoder of the Siamese backbone.
        encoder_depth: Backbone stages used (3: output stride 8, like the paper's first EfficientNet blocks).
        mlp_channels: Hidden width of the pixel-wise MLP classifier.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        encoder_name: str = "tu-tf_efficientnet_lite0",
        encoder_depth: int = 3,
        mlp_channels: int = 16,
    ) -> None:
        super().__init__()
        self.encoder_name = encoder_name
        self.encoder = smp.encoders.get_encoder(encoder_name, in_channels=in_channels, depth=encoder_depth,
                                                weights=None)
        chans: Sequence[int] = list(self.encoder.out_channels)[1:]  # stage outputs (skip the input itself)
        self.mix = nn.ModuleList(MixingBlock(c) for c in chans)
        self.up = nn.ModuleList(_UpMask(chans[i + 1], chans[i]) for i in range(len(chans) - 1))
        self.mlp = nn.Sequential(
            nn.Conv2d(chans[0], mlp_channels, kernel_size=1), nn.PReLU(), nn.Conv2d(mlp_channels, 1, kernel_size=1)
        )

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """Change logits ``(N, 1, H, W)`` for two ``(N, C, H, W)`` normalised dates."""
        n = before.shape[0]
        feats = self.encoder(torch.cat([before, after], dim=0))[1:]
        mixed = [mix(f[:n], f[n:]) for mix, f in zip(self.mix, feats, strict=True)]
        d = mixed[-1]
        for i in range(len(mixed) - 2, -1, -1):
            d = self.up[i](d, mixed[i])
        d = F.interpolate(d, size=before.shape[-2:], mode="bilinear", align_corners=False)
        out: torch.Tensor = self.mlp(d)
        return out
