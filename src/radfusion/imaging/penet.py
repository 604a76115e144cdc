"""PENet: the 3-D ResNeXt-style CNN of the imaging-only model, in three registered sizes.

Written from the architecture's description (see docs): a stem (7x7x7 convolution with stride
(1, 2, 2), GroupNorm, LeakyReLU, 3x3x3 max-pool), four stages of bottleneck blocks with grouped
3x3x3 convolutions (cardinality 32), GroupNorm with channels/16 groups, squeeze-excitation,
the last norm of each block starting at zero, stochastic depth falling linearly to 0.5
survival, then global average pooling and a linear head whose bias starts at the focal-loss
prior -log(99).

A CT window has one channel. The original repeats it to three channels for a video-pretrained
stem; here the repeat is folded into the stem instead (its kernel summed over the three input
channels), which computes the same thing with a third of the stem's work.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass

import torch
from torch import nn

from radfusion.errors import RadfusionError
from radfusion.imaging.registry import register_model

__all__ = ["NORMS", "SHORTCUTS", "PENet", "PENetConfig", "penet_50", "penet_small", "penet_tiny"]

SHORTCUTS = ("conv", "maxpool")
NORMS = ("group", "batch")


@dataclass(frozen=True)
class PENetConfig:
    layers: tuple[int, ...] = (3, 4, 6, 3)
    widths: tuple[int, ...] = (128, 256, 512, 1024)  # bottleneck widths per stage
    stem_channels: int = 64
    expansion: int = 2
    cardinality: int = 32
    se_reduction: int = 16
    gn_channels_per_group: int = 16
    min_survival: float = 0.5  # stochastic depth: survival falls linearly to this
    num_classes: int = 1
    in_chans: int = 1
    prior: float = 0.01  # the head's bias starts at logit(prior) = -log(99)
    zero_init_last_norm: bool = True  # each block starts as the identity (the original's)
    # How a downsampling block's shortcut halves the grid: "conv", a strided 1x1 convolution
    # (the original's), keeps one position in eight; "maxpool", a 2x max-pool before the 1x1
    # convolution, keeps the strongest response of each eight, so a finding of a few voxels
    # survives every stage (see benchmarks/small_findings.py).
    shortcut: str = "conv"
    # "group", GroupNorm with channels/16 groups (the original's), normalises each window by
    # its own statistics; "batch", BatchNorm, by the batch's, per channel. Trained from
    # scratch on the phantom, the BatchNorm design fits its training windows far faster
    # (docs/experiments/demo.md). The original's pretrained weights are GroupNorm weights: use
    # "group" with them.
    norm: str = "group"


def _norm(kind: str, channels: int, per_group: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    return nn.GroupNorm(max(channels // per_group, 1), channels)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class DepthTapConv3d(nn.Conv3d):
    """A 3-D convolution of a 1-channel volume computed as a 2-D one: the kernel's depth taps
    become input channels (slice d's channels are slices d-3 .. d+3), which the 2-D kernels
    handle better than a 3-D convolution with one input channel. The weights keep the Conv3d's
    shape and name, so checkpoints and pretrained weights load unchanged. Inference only: with
    autograd the 3-D kernel's backward is the faster (benchmarks/penet_speed.py)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plain = self.in_channels != 1 or self.groups != 1 or self.stride[0] != 1
        if plain or self.dilation != (1, 1, 1) or torch.is_grad_enabled():
            return super().forward(x)
        n, _, d, h, w = x.shape
        kd, pd = self.kernel_size[0], self.padding[0]
        x = nn.functional.pad(x[:, 0], (0, 0, 0, 0, pd, pd))  # [n, d + 2 pd, h, w]
        taps = x.unfold(1, kd, 1).permute(0, 1, 4, 2, 3).reshape(n * d, kd, h, w)
        taps = taps.contiguous(memory_format=torch.channels_last)
        out = nn.functional.conv2d(
            taps, self.weight[:, 0], self.bias, self.stride[1:], self.padding[1:]
        )  # [n d, c, h', w']
        out = out.unflatten(0, (n, d)).permute(0, 2, 1, 3, 4)
        return out.contiguous(memory_format=torch.channels_last_3d)


class SqueezeExcite(nn.Module):
    """Channel gates from globally pooled features: linear, LeakyReLU, linear, sigmoid."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel gates [B, C, 1, 1, 1] that :meth:`forward` multiplies ``x`` by."""
        s = x.mean(dim=(2, 3, 4))
        return torch.sigmoid(self.fc2(nn.functional.leaky_relu(self.fc1(s))))[..., None, None, None]

    def forward(self, x):
        return x * self.gates(x)


class Bottleneck(nn.Module):
    def __init__(
        self,
        cin: int,
        width: int,
        cout: int,
        *,
        stride: int,
        cardinality: int,
        se_reduction: int,
        per_group: int,
        survival: float,
        zero_init: bool = True,
        shortcut: str = "conv",
        norm: str = "group",
    ):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, width, 1, bias=False)
        self.norm1 = _norm(norm, width, per_group)
        self.conv2 = nn.Conv3d(
            width, width, 3, stride=stride, padding=1, groups=cardinality, bias=False
        )
        self.norm2 = _norm(norm, width, per_group)
        self.conv3 = nn.Conv3d(width, cout, 1, bias=False)
        self.norm3 = _norm(norm, cout, per_group)
        if zero_init:
            nn.init.zeros_(self.norm3.weight)  # each block starts as the identity
        self.se = SqueezeExcite(cout, se_reduction)
        self.act = nn.LeakyReLU(inplace=True)
        self.survival = survival
        if stride != 1 and shortcut == "maxpool":
            # Named so the convolution and norm keep the keys ("shortcut.0", "shortcut.1") that
            # pretrained weights of the original design load into.
            self.shortcut = nn.Sequential(
                OrderedDict(
                    pool=nn.MaxPool3d(stride, ceil_mode=True),
                    **{"0": nn.Conv3d(cin, cout, 1, bias=False), "1": _norm(norm, cout, per_group)},
                )
            )
        elif stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv3d(cin, cout, 1, stride=stride, bias=False), _norm(norm, cout, per_group)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        identity = self.shortcut(x)
        if self.training and self.survival < 1.0:
            # Stochastic depth, per sample: a dropped residual leaves only the shortcut.
            keep = torch.rand(x.shape[0], 1, 1, 1, 1, device=x.device) < self.survival
            # Every sample dropped: the shortcut alone (not in place: identity may be the
            # previous block's output). Not under DDP, whose gradient reduction waits for a
            # gradient of every weight: there the residual is computed and multiplied by 0.
            if not keep.any() and not _distributed():
                return nn.functional.leaky_relu(identity)
        out = self.act(self.norm1(self.conv1(x)))
        out = self.act(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        gates = self.se.gates(out)
        if self.training and self.survival < 1.0:
            gates = gates * keep / self.survival  # the dropped samples' residual is zero
        # identity + out * gates in one pass over the block's largest tensor.
        return self.act(torch.addcmul(identity, out, gates))


class PENet(nn.Module):
    """PENet for 1-channel CT windows shaped [B, 1, slices, H, W] -> logits [B, classes]."""

    def __init__(self, config: PENetConfig = PENetConfig()):
        super().__init__()
        self.config = config
        c = config
        if c.shortcut not in SHORTCUTS:
            raise RadfusionError(f"unknown PENet shortcut {c.shortcut!r}; known: {SHORTCUTS}")
        if c.norm not in NORMS:
            raise RadfusionError(f"unknown PENet norm {c.norm!r}; known: {NORMS}")
        self.stem = nn.Sequential(
            DepthTapConv3d(c.in_chans, c.stem_channels, 7, stride=(1, 2, 2), padding=3, bias=False),
            _norm(c.norm, c.stem_channels, c.gn_channels_per_group),
            nn.LeakyReLU(inplace=True),
            nn.MaxPool3d(3, stride=2, padding=1),
        )
        blocks, cin = [], c.stem_channels
        total, k = sum(c.layers), 0
        stages = []
        for stage, (n, width) in enumerate(zip(c.layers, c.widths, strict=True)):
            cout = width * c.expansion
            blocks = []
            for b in range(n):
                survival = 1.0 - (1.0 - c.min_survival) * k / max(total - 1, 1)
                blocks.append(
                    Bottleneck(
                        cin,
                        width,
                        cout,
                        stride=2 if (b == 0 and stage > 0) else 1,
                        cardinality=c.cardinality,
                        se_reduction=c.se_reduction,
                        per_group=c.gn_channels_per_group,
                        survival=survival,
                        zero_init=c.zero_init_last_norm,
                        shortcut=c.shortcut,
                        norm=c.norm,
                    )
                )
                cin, k = cout, k + 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.num_features = cin
        self.head = nn.Linear(cin, c.num_classes)
        nn.init.constant_(self.head.bias, math.log(c.prior / (1 - c.prior)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled embedding [B, num_features] (what fusion models reuse)."""
        x = self.stages(self.stem(x))
        return x.mean(dim=(2, 3, 4))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != self.config.in_chans:
            raise RadfusionError(
                f"PENet expects windows shaped [batch, {self.config.in_chans}, slices, H, W]; "
                f"got {list(x.shape)}"
            )
        return self.forward_head(self.forward_features(x))


def _build(base: PENetConfig, overrides: dict) -> PENet:
    fields = set(PENetConfig.__dataclass_fields__)
    unknown = set(overrides) - fields
    if unknown:
        raise RadfusionError(
            f"unknown PENet argument(s) {sorted(unknown)}; known: {sorted(fields)}"
        )
    values = {**asdict(base), **overrides}
    values["layers"], values["widths"] = tuple(values["layers"]), tuple(values["widths"])
    return PENet(PENetConfig(**values))


@register_model
def penet_50(**overrides) -> PENet:
    """The paper's PENet: [3, 4, 6, 3] blocks, widths 128-1024, cardinality 32 (28.4 M)."""
    return _build(PENetConfig(), overrides)


@register_model
def penet_small(**overrides) -> PENet:
    """[1, 2, 2, 1] blocks at half width: a CPU-sized PENet (about 1.5 M parameters)."""
    return _build(
        PENetConfig(
            layers=(1, 2, 2, 1), widths=(64, 128, 256, 512), stem_channels=32, cardinality=16
        ),
        overrides,
    )


@register_model
def penet_tiny(**overrides) -> PENet:
    """[1, 1, 1, 1] blocks, widths 16-128: for tests and the CPU demo."""
    return _build(
        PENetConfig(
            layers=(1, 1, 1, 1),
            widths=(16, 32, 64, 128),
            stem_channels=16,
            cardinality=4,
            se_reduction=8,
        ),
        overrides,
    )
