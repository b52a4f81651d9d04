"""A patch discriminator: a small convolutional net that scores every patch of an image real or fake.

PatchGAN (Isola et al. 2017, "Image-to-Image Translation with Conditional Adversarial Networks"),
as VQGAN uses it (Esser et al. 2021, "Taming Transformers for High-Resolution Image Synthesis"):
`layers` stride-2 4x4 convolutions, one stride-1 4x4 convolution, then a 4x4 convolution to one
logit per patch. GroupNorm stands in for BatchNorm, so an image's score does not depend on the other
images of its batch (gradient accumulation and data parallelism judge it alike).
"""

from __future__ import annotations

import torch
from torch import nn

from libcem.generative.models.blocks import norm

MAX_MULT = 8  # the widest layer has at most 8 x width channels (as in PatchGAN)


def patch_grid(size: int, layers: int) -> int:
    """The side of the logit grid of a `layers`-layer discriminator on images of side `size`."""
    for _ in range(layers):
        size //= 2  # 4x4, stride 2, padding 1
    return size - 2  # two 4x4, stride 1, padding 1 convolutions


class Discriminator(nn.Module):
    """Images (B, C, H, W) in [0, 1] -> patch logits (B, 1, h, w), h = patches(H) (> 0: judged real)."""

    def __init__(self, in_channels: int, width: int = 32, layers: int = 2,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.layers = layers
        mods: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        cin = width
        for n in range(1, layers + 1):
            cout = width * min(2**n, MAX_MULT)
            stride = 2 if n < layers else 1  # the last hidden layer keeps the size (PatchGAN)
            mods += [nn.Conv2d(cin, cout, 4, stride=stride, padding=1, bias=False), norm(cout), nn.LeakyReLU(0.2)]
            cin = cout
        mods.append(nn.Conv2d(cin, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*mods)
        self._init(generator)

    def _init(self, generator: torch.Generator | None) -> None:
        """N(0, 0.02) convolutions, N(1, 0.02) norm scales, zero biases (the DCGAN / PatchGAN init)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02, generator=generator)
            elif isinstance(m, nn.GroupNorm):
                nn.init.normal_(m.weight, 1.0, 0.02, generator=generator)
            if isinstance(m, (nn.Conv2d, nn.GroupNorm)) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def patches(self, size: int) -> int:
        """The side of the logit grid for images of side `size` (< 1: too small for this many layers)."""
        return patch_grid(size, self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1] -> (B, 1, h, w)
        return self.net(x * 2 - 1)
