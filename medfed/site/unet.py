"""A small U-Net (Ronneberger et al. 2015), 2D or 3D, for the default segmentation task.

Sized to train in seconds on a CPU: ``depth`` down-sampling steps (default 2) with
``channels``, ``2·channels``, … feature maps (default 8), two 3×3(×3) convolutions per
level, skip connections by concatenation, and a 1×1 convolution to one logit per class.

Choices made so that the model works wherever medfed trains:

- **GroupNorm, not BatchNorm.** Batch statistics differ between hospitals (a federated
  average of running means from sites with different scanners describes no site) and
  Opacus cannot compute per-example gradients through BatchNorm, so DP-SGD would refuse the
  model. GroupNorm normalises each image on its own.
- **Up-sampling by interpolation followed by a convolution**, not transposed convolutions:
  no checkerboard artefacts, and every layer is one Opacus supports.
- Inputs whose sides are not multiples of ``2**depth`` are padded and the output cropped
  back, so the output always has the input's spatial shape.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["UNet"]


def _groups(channels: int) -> int:
    """The most groups up to 4 that divide ``channels`` (GroupNorm needs a divisor)."""
    return next(g for g in (4, 2, 1) if channels % g == 0)


class _Block(nn.Sequential):
    """Two convolutions, each followed by GroupNorm and ReLU."""

    def __init__(self, dims: int, c_in: int, c_out: int) -> None:
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        super().__init__(
            conv(c_in, c_out, kernel_size=3, padding=1),
            nn.GroupNorm(_groups(c_out), c_out),
            nn.ReLU(),
            conv(c_out, c_out, kernel_size=3, padding=1),
            nn.GroupNorm(_groups(c_out), c_out),
            nn.ReLU(),
        )


class UNet(nn.Module):
    """``(n, in_channels, *spatial)`` → ``(n, n_classes, *spatial)`` class logits.

    ``dims`` is 2 (images) or 3 (volumes). With the defaults a 2D model has about 30,000
    parameters and a 3D one about 89,000.
    """

    def __init__(
        self,
        *,
        dims: int,
        in_channels: int,
        n_classes: int,
        channels: int = 8,
        depth: int = 2,
    ) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"a U-Net is 2D or 3D, not {dims}D")
        if depth < 1 or channels < 1 or in_channels < 1 or n_classes < 1:
            raise ValueError("depth, channels, in_channels and n_classes must be positive")
        self.dims, self.depth = dims, depth
        widths = [channels * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList([_Block(dims, in_channels, widths[0])])
        self.down.extend(_Block(dims, widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(
            _Block(dims, widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth))
        )
        self.pool = nn.MaxPool2d(2) if dims == 2 else nn.MaxPool3d(2)
        mode = "bilinear" if dims == 2 else "trilinear"
        self.upsample = nn.Upsample(scale_factor=2, mode=mode, align_corners=False)
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.head = conv(widths[0], n_classes, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        spatial = x.shape[2:]
        if len(spatial) != self.dims:
            raise ValueError(
                f"this {self.dims}D U-Net takes (batch, channels, {self.dims} sides), "
                f"got shape {tuple(x.shape)}"
            )
        multiple = 2**self.depth
        pad: list[int] = []
        for side in reversed(spatial):  # F.pad takes the last dimension first
            pad += [0, (-side) % multiple]
        if any(pad):
            x = nn.functional.pad(x, pad, mode="replicate")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for block in self.up:
            x = block(torch.cat([self.upsample(x), skips.pop()], dim=1))
        out: Tensor = self.head(x)
        crop = (slice(None), slice(None), *(slice(0, s) for s in spatial))
        return out[crop]
