"""U-Net (Ronneberger, Fischer, Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015, Sec. 2 and Fig. 1-2).

Contracting path: a double 3x3 conv block (conv-ReLU twice) at 64 channels, then four down steps, each a
2x2 stride-2 max pool followed by a double conv that doubles the channels (64-128-256-512-1024, the
bottom at stride 16). Expansive path: four up steps, each a 2x2 stride-2 transposed convolution that
halves the channels, concatenation with the encoder feature of the same level (skip first, as in the
paper's Fig. 1), and a double conv; then a 1x1 classifier. `base_channels` (64) scales all widths.
31.0M parameters at 2 classes, as the paper's network.

`padding=True` (default): 'same' 3x3 convolutions, the common modern form. Pools floor odd sizes, so an
up step can come out one row / column short of its skip; the upsampled map is zero-padded on the
bottom / right to the skip's size. Logits are at the input's H, W. (A side shorter than 16 pixels
would pool away to nothing; such inputs are mirrored up to 16 and the logits cropped back.)

`padding=False`: the paper's unpadded ('valid') convolutions, each losing a one-pixel border, with the
skips center-cropped to the upsampled map (Fig. 1: a 572x572 input gives 388x388 logits). To keep the
seglab contract (logits at input size) the model applies the paper's overlap-tile strategy (Sec. 2,
Fig. 2) to the whole image: it mirrors the input by 92 pixels on the top / left and enough on the bottom
/ right to reach the next size the network accepts (every pool input even), then crops the valid
output back to H x W. So every output pixel sees its full 184-pixel context, filled by mirroring at the
image border, and the logits still match the input size.

`norm=True` (default) adds batch norm after every 3x3 conv (conv-BN-ReLU): a deviation from the paper,
widely used because it trains reliably without the paper's careful initialisation and high-momentum
SGD. `norm=False` gives the paper's plain conv-ReLU network (with He initialisation, Sec. 3).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SeglabError
from ..registry import register_model

_DEPTH = 4  # down steps
_MIN_SIZE = 2 ** _DEPTH  # smallest side the padded network takes without mirroring
# Border lost by the valid network on each side: sum over the 9 double convs of 2 pixels each, scaled
# by the level's stride: 2*(1+2+4+8) down + 2*16 bottom + 2*(8+4+2+1) up = 30 + 32 + 30 = 92.
_VALID_BORDER = 92


class DoubleConv(nn.Sequential):
    """(3x3 conv -> [BN] -> ReLU) x 2, 'same' or 'valid' padding."""

    def __init__(self, in_channels: int, out_channels: int, *, padding: bool = True, norm: bool = True):
        p = 1 if padding else 0
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            layers.append(nn.Conv2d(c_in, out_channels, 3, padding=p, bias=not norm))
            if norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Up(nn.Module):
    """2x2 transposed conv (halves the channels), fit to the skip, concatenate, double conv."""

    def __init__(self, in_channels: int, out_channels: int, *, padding: bool = True, norm: bool = True):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.conv = DoubleConv(2 * out_channels, out_channels, padding=padding, norm=norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        if dh > 0 or dw > 0:  # padded mode, odd size before a pool: pad the bottom / right
            x = F.pad(x, (0, dw, 0, dh))
        if dh < 0 or dw < 0:  # never happens; sizes come from the same pools
            raise RuntimeError(f"U-Net up step larger than its skip: {tuple(x.shape)} vs {tuple(skip.shape)}")
        return self.conv(torch.cat([skip, x], dim=1))


def _center_crop(x: torch.Tensor, size) -> torch.Tensor:
    h, w = size
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., top:top + h, left:left + w]


def _valid_sizes(n: int) -> tuple[int, int]:
    """Smallest valid-mode output size >= n and the input size it needs (Fig. 1: 388 <- 572).

    With a bottom feature of b pixels the output is 16 b - 60 and the input 16 b + 124."""
    b = max(1, -(-(n + 60) // 16))
    out = 16 * b - 60
    return out, out + 2 * _VALID_BORDER


def _mirror_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Reflect-pad by any amount; PyTorch's reflect mode needs pad < size, so repeat when it is not."""
    while top or bottom or left or right:
        h, w = x.shape[-2:]
        if h < 2 or w < 2:  # nothing to reflect: repeat the edge instead
            return F.pad(x, (left, right, top, bottom), mode="replicate")
        t, b, l, r = min(top, h - 1), min(bottom, h - 1), min(left, w - 1), min(right, w - 1)
        x = F.pad(x, (l, r, t, b), mode="reflect")
        top, bottom, left, right = top - t, bottom - b, left - l, right - r
    return x


class UNet(nn.Module):
    def __init__(self, num_classes: int, *, in_channels: int = 3, base_channels: int = 64,
                 padding: bool = True, norm: bool = True):
        super().__init__()
        if base_channels < 1:
            raise SeglabError(f"unet: base_channels must be positive, got {base_channels}")
        widths = [base_channels * 2 ** i for i in range(_DEPTH + 1)]  # 64, 128, 256, 512, 1024
        self.padding = padding
        self.inc = DoubleConv(in_channels, widths[0], padding=padding, norm=norm)
        self.pool = nn.MaxPool2d(2, 2)
        self.down = nn.ModuleList(
            DoubleConv(widths[i], widths[i + 1], padding=padding, norm=norm) for i in range(_DEPTH))
        self.up = nn.ModuleList(
            Up(widths[i + 1], widths[i], padding=padding, norm=norm) for i in reversed(range(_DEPTH)))
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # He init, as the paper's Sec. 3
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _forward_net(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for block in self.down:
            skips.append(block(self.pool(skips[-1])))
        x = skips.pop()
        for up in self.up:
            skip = skips.pop()
            if not self.padding:
                skip = _center_crop(skip, (2 * x.shape[-2], 2 * x.shape[-1]))
            x = up(x, skip)
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.padding:
            if h >= _MIN_SIZE and w >= _MIN_SIZE:
                return self._forward_net(x)
            # Fewer than 16 rows / columns would pool away to nothing: mirror up to 16, crop back.
            x = _mirror_pad(x, 0, max(0, _MIN_SIZE - h), 0, max(0, _MIN_SIZE - w))
            return self._forward_net(x)[..., :h, :w]
        (_oh, ih), (_ow, iw) = _valid_sizes(h), _valid_sizes(w)
        x = _mirror_pad(x, _VALID_BORDER, ih - h - _VALID_BORDER, _VALID_BORDER, iw - w - _VALID_BORDER)
        return self._forward_net(x)[..., :h, :w]


@register_model
def unet(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
         base_channels: int = 64, padding: bool = True, norm: bool = True) -> UNet:
    """U-Net (31.0M parameters at 2 classes); `padding=False` for the paper's valid convolutions with
    overlap-tile mirroring, `norm=False` for the paper's network without batch norm."""
    if backbone_weights is not None:
        raise SeglabError("unet has no pretrained backbone; backbone_weights is not supported")
    return UNet(num_classes, in_channels=in_channels, base_channels=base_channels, padding=padding,
                norm=norm)
