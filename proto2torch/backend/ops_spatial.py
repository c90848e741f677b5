"""Fork layers that move information across positions (copied into generated files):
PSANet's point-wise spatial attention, FlowNet2's flow warping and the ColorConv
colour-space conversion."""

from typing import List

import torch
from torch import Tensor, nn


class PointwiseSpatialAttention(nn.Module):
    """PSANet: each output position p is a weighted sum over positions q of the input,
    weights read from a (mask_h x mask_w) window of attention channels centred on p
    (COLLECT) or on q (DISTRIBUTE); positions outside the window weigh 0.  With
    ``softmax`` the weights of each output position are soft-maxed over all q first
    (the zero weights included), then the sum is divided by ``norm``."""

    def __init__(self, collect: bool, softmax: bool, norm: float, mask_h: int, mask_w: int):
        super().__init__()
        self.collect = collect
        self.softmax = softmax
        self.norm = norm
        self.mask_h = mask_h
        self.mask_w = mask_w

    def forward(self, x: Tensor, attention: Tensor) -> Tensor:
        n, c, h, w = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
        ys = torch.arange(h, device=x.device).repeat_interleave(w)
        xs = torch.arange(w, device=x.device).repeat(h)
        dy = ys[:, None] - ys[None, :] + (self.mask_h - 1) // 2  # [q, p]: window row of q seen from p
        dx = xs[:, None] - xs[None, :] + (self.mask_w - 1) // 2
        inside = (dy >= 0) & (dy < self.mask_h) & (dx >= 0) & (dx < self.mask_w)
        channel = torch.clamp(dy, 0, self.mask_h - 1) * self.mask_w + torch.clamp(dx, 0, self.mask_w - 1)
        maps = attention.reshape(n, self.mask_h * self.mask_w, h * w)
        weights = torch.gather(maps, 1, channel.unsqueeze(0).expand(n, h * w, h * w))
        weights = torch.where(inside.unsqueeze(0), weights, torch.zeros_like(weights))
        if not self.collect:
            weights = weights.transpose(1, 2)
        if self.softmax:
            weights = torch.softmax(weights, 1)
        return torch.bmm(x.reshape(n, c, h * w), weights).reshape(n, c, h, w) / self.norm


def _pixels(image: Tensor, row: Tensor, col: Tensor) -> Tensor:
    """``image[n, :, row[n, y, x], col[n, y, x]]`` for every (n, y, x)."""
    n, c, h, w = image.shape[0], image.shape[1], image.shape[2], image.shape[3]
    index = (row * w + col).reshape(n, 1, h * w).expand(n, c, h * w)
    return torch.gather(image.reshape(n, c, h * w), 2, index).reshape(n, c, h, w)


def flow_warp(image: Tensor, flow: Tensor, fill: float) -> Tensor:
    """FlowNet2's FlowWarp: output (x, y) samples the image bilinearly at (x + u, y + v);
    samples outside the image are ``fill``."""
    h, w = image.shape[2], image.shape[3]
    x2 = torch.arange(w, dtype=torch.float32, device=image.device)[None, None, :] + flow[:, 0].to(torch.float32)
    y2 = torch.arange(h, dtype=torch.float32, device=image.device)[None, :, None] + flow[:, 1].to(torch.float32)
    inside = (x2 >= 0) & (y2 >= 0) & (x2 < w) & (y2 < h)
    left = torch.clamp(x2, 0.0, float(w - 1)).to(torch.int64)
    top = torch.clamp(y2, 0.0, float(h - 1)).to(torch.int64)
    right = torch.clamp(left + 1, max=w - 1)
    bottom = torch.clamp(top + 1, max=h - 1)
    alpha = (x2 - left.to(torch.float32)).unsqueeze(1)
    beta = (y2 - top.to(torch.float32)).unsqueeze(1)
    out = (1 - alpha) * (1 - beta) * _pixels(image, top, left) + alpha * (1 - beta) * _pixels(image, top, right)
    out = out + (1 - alpha) * beta * _pixels(image, bottom, left) + alpha * beta * _pixels(image, bottom, right)
    return torch.where(inside.unsqueeze(1), out, torch.full_like(out, fill))


def _srgb_to_linear(v: Tensor) -> Tensor:
    return torch.where(v <= 0.04045, v / 12.92, torch.pow((v + 0.055) / 1.055, 2.4))


def _linear_to_srgb(v: Tensor) -> Tensor:
    return torch.where(v <= 0.0031308, v * 12.92, 1.055 * torch.pow(v, 1.0 / 2.4) - 0.055)


def _lab_f(v: Tensor) -> Tensor:
    return torch.where(v > 0.008867, torch.pow(v, 1.0 / 3.0), (903.3 * v + 16.0) / 116.0)


def _lab_f_inverse(v: Tensor) -> Tensor:
    return torch.where(v > 0.206896, torch.pow(v, 3.0), (116.0 * v - 16.0) / 903.3)


def _convert(x: Tensor, src: str, dst: str) -> List[Tensor]:
    """One image's channels (planes) from ``src`` to ``dst`` space, via XYZ where needed."""
    planes = [x[i] for i in range(x.shape[0])]
    white = [0.95074, 1.0, 1.08883]
    if src == dst:
        return planes
    if src == "Gray":
        return [planes[0], planes[0], planes[0]]
    if src == "RGB" and dst == "Gray":
        return [0.2126729 * planes[0] + 0.7151522 * planes[1] + 0.0721750 * planes[2]]
    if src == "Lab":
        fy = (planes[0] + 16.0) / 116.0
        planes = [_lab_f_inverse(fy + planes[1] / 500.0) * white[0], _lab_f_inverse(fy) * white[1], _lab_f_inverse(fy - planes[2] / 200.0) * white[2]]
    elif src == "RGB":
        r = _srgb_to_linear(planes[0] / 255.0)
        g = _srgb_to_linear(planes[1] / 255.0)
        b = _srgb_to_linear(planes[2] / 255.0)
        planes = [
            0.4124564 * r + 0.3575761 * g + 0.1804375 * b,
            0.2126729 * r + 0.7151522 * g + 0.0721750 * b,
            0.0193339 * r + 0.1191920 * g + 0.9503041 * b,
        ]
    if dst == "XYZ":
        return planes
    if dst == "Lab":
        fx = _lab_f(planes[0] / white[0])
        fy = _lab_f(planes[1] / white[1])
        fz = _lab_f(planes[2] / white[2])
        return [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
    x_, y_, z_ = planes[0], planes[1], planes[2]
    linear = [
        3.2404542 * x_ - 1.5371385 * y_ - 0.4985314 * z_,
        -0.9692660 * x_ + 1.8760108 * y_ + 0.0415560 * z_,
        0.0556434 * x_ - 0.2040259 * y_ + 1.0572252 * z_,
    ]
    return [_linear_to_srgb(p) * 255.0 for p in linear]


def color_convert(x: Tensor, src: str, dst: str, channels: int) -> Tensor:
    """The ColorConv layer: RGB/BGR (0..255), XYZ, Lab or Gray.  Like the fork, only the
    first image of the batch is converted; the others come out as zeros."""
    out = torch.zeros([x.shape[0], channels, x.shape[2], x.shape[3]], dtype=x.dtype, device=x.device)
    image = x[0]
    if src == "BGR":
        image = image.flip(0)
        src = "RGB"
    swap_out = dst == "BGR"
    planes = _convert(image, src, "RGB" if swap_out else dst)
    converted = torch.stack(planes, 0)
    out[0] = converted.flip(0) if swap_out else converted
    return out
