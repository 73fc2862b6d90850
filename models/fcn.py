"""FCN-32s, FCN-16s and FCN-8s on a VGG16 backbone (Long, Shelhamer & Darrell, CVPR 2015).

Layout of the competition's seed FCN: VGG16 conv blocks with ceil-mode pooling, fc6 and fc7 as 1x1 convs,
1x1 score layers, learnable bilinear-initialised transposed convs. Added from the paper: ReLU after fc6 and
fc7, zero-initialised score layers, bilinear upsampling init. The output is exactly the input's size for any
input size: each upsampled map is aligned to its skip at the top-left corner and cropped to the skip's size.

Setting `norm`: `none` (the seed's plain VGG16, default) or `batch` (VGG16-BN: BatchNorm after every backbone
conv, torchvision's `vgg16_bn` layout). Plain VGG16 needs ImageNet weights to learn in a sensible budget; from
random init it sits at the all-background prior for many epochs. VGG16-BN trains from scratch.

Setting `fc6`: `1x1` (the seed's) or `7x7` (the paper's: VGG16's first fully connected layer, 25088 -> 4096, is a
7x7 conv over pool5; padded by 3 here so that every input size keeps its output grid). With ImageNet weights,
`7x7` loads VGG16's fc6 reshaped to that conv (102.8M values); `1x1` cannot hold it and leaves fc6 random.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from competition.core.errors import UserError
from models.pretrained import Warn, read_weights, vgg_weights

VGG16_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))  # (convs, channels) per block
STRIDES = (32, 16, 8)
NORMS = ("none", "batch")
FC6_KERNELS = {"1x1": 1, "7x7": 7}


def vgg16_features(batch_norm: bool = False) -> nn.Sequential:
    """The 13 VGG16 convs with ReLUs and ceil-mode max pools, indexed as torchvision's `vgg16().features`
    (or `vgg16_bn().features` with batch_norm)."""
    layers: list[nn.Module] = []
    in_ch = 3
    for n_convs, out_ch in VGG16_BLOCKS:
        for _ in range(n_convs):
            layers.append(nn.Conv2d(in_ch, out_ch, 3, padding=1))
            layers += [nn.BatchNorm2d(out_ch)] if batch_norm else []
            layers.append(nn.ReLU(inplace=True))
            in_ch = out_ch
        layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))
    return nn.Sequential(*layers)


def pool_ends(features: nn.Sequential) -> list[int]:
    """Index in `features` just after each max pool (pool1 .. pool5)."""
    return [i + 1 for i, layer in enumerate(features) if isinstance(layer, nn.MaxPool2d)]


def bilinear_kernel(size: int) -> torch.Tensor:
    """The size x size bilinear interpolation kernel used to initialise FCN upsampling layers."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1 - (torch.arange(size, dtype=torch.float32) - center).abs() / factor
    return ramp[:, None] * ramp[None, :]


def bilinear_upsampler(num_classes: int, factor: int) -> nn.ConvTranspose2d:
    """A learnable factor-x upsampling layer initialised to per-class bilinear interpolation.

    Kernel 2*factor, stride factor, padding factor/2: n inputs give exactly n*factor outputs, pixel-centre
    aligned with the ceil-mode pooling grid. The bias (zero at init) is the seed's, needed for its count.
    """
    layer = nn.ConvTranspose2d(num_classes, num_classes, 2 * factor, stride=factor, padding=factor // 2)
    with torch.no_grad():
        layer.weight.zero_()
        kernel = bilinear_kernel(2 * factor)
        for c in range(num_classes):
            layer.weight[c, c] = kernel
        layer.bias.zero_()
    return layer


def zero_conv1x1(in_ch: int, num_classes: int) -> nn.Conv2d:
    """A 1x1 score layer with weight and bias zero, as in the paper."""
    layer = nn.Conv2d(in_ch, num_classes, 1)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def crop_to(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """The top-left size[0] x size[1] window of x."""
    return x[..., : size[0], : size[1]]


class FCN(nn.Module):
    """FCN-<stride>s semantic segmentation net: logits (N, num_classes, H, W) for input (N, 3, H, W)."""

    def __init__(
        self, num_classes: int, stride: int = 16, dropout: float = 0.5, norm: str = "none", fc6: str = "1x1"
    ) -> None:
        super().__init__()
        if stride not in STRIDES:
            raise ValueError(f"FCN stride must be one of {STRIDES}, got {stride}")
        if norm not in NORMS:
            raise UserError(f"setting norm={norm!r}: expected one of {', '.join(NORMS)} for FCN models")
        if fc6 not in FC6_KERNELS:
            raise UserError(f"setting fc6={fc6!r}: expected one of {', '.join(FC6_KERNELS)} for FCN models")
        self.stride = stride
        self.features = vgg16_features(batch_norm=norm == "batch")
        self.pool3_end, self.pool4_end = pool_ends(self.features)[2:4]
        kernel = FC6_KERNELS[fc6]
        self.fc6 = nn.Conv2d(512, 4096, kernel, padding=kernel // 2)
        self.drop6 = nn.Dropout2d(dropout)
        self.fc7 = nn.Conv2d(4096, 4096, 1)
        self.drop7 = nn.Dropout2d(dropout)
        for conv in [m for m in self.modules() if isinstance(m, nn.Conv2d)]:
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        self.score_fr = zero_conv1x1(4096, num_classes)
        if stride <= 16:
            self.score_pool4 = zero_conv1x1(512, num_classes)
            self.upscore2 = bilinear_upsampler(num_classes, 2)
        if stride == 8:
            self.score_pool3 = zero_conv1x1(256, num_classes)
            self.upscore_pool4 = bilinear_upsampler(num_classes, 2)
        self.upscore = bilinear_upsampler(num_classes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pool3 = self.features[: self.pool3_end](x)
        pool4 = self.features[self.pool3_end : self.pool4_end](pool3)
        h = self.drop6(F.relu(self.fc6(self.features[self.pool4_end :](pool4))))
        score = self.score_fr(self.drop7(F.relu(self.fc7(h))))
        if self.stride <= 16:
            score = crop_to(self.upscore2(score), pool4.shape[-2:]) + self.score_pool4(pool4)
        if self.stride == 8:
            score = crop_to(self.upscore_pool4(score), pool3.shape[-2:]) + self.score_pool3(pool3)
        return crop_to(self.upscore(score), size)


def load_vgg16_weights(model: FCN, path: str | Path) -> str:
    """Load a torchvision VGG16 (or, with norm=batch, VGG16-BN) state dict: its 13 convs (and BatchNorms) into
    `features`, classifier.3 into fc7 and, when fc6 is 7x7 (the paper's), classifier.0 into fc6: the fully
    connected layers converted to convolutions. A 1x1 fc6 (the seed's) cannot hold VGG16's fc6 and stays random,
    and the returned description says so."""
    path = Path(path)
    batch_norm = any(isinstance(m, nn.BatchNorm2d) for m in model.features)
    arch, name = ("vgg16_bn", "VGG16-BN") if batch_norm else ("vgg16", "VGG16")
    state = read_weights(path, f"{name} weights")
    conv = {f"features.{k}": v.shape for k, v in model.features.state_dict().items()}
    wanted = conv | {"classifier.3.weight": (4096, 4096), "classifier.3.bias": (4096,)}
    if model.fc6.kernel_size == (7, 7):
        wanted |= {"classifier.0.weight": (4096, 512 * 7 * 7), "classifier.0.bias": (4096,)}
    extra = [k for k in state if k.startswith("features.") and k not in conv]
    bad = [k for k, shape in wanted.items() if k not in state or tuple(state[k].shape) != tuple(shape)]
    if bad or extra:
        keys = ", ".join((bad or extra)[:3])
        detail = f"missing or mis-shaped {keys}" if bad else f"unexpected {keys}"
        raise UserError(f"{path}: not a torchvision {arch}() state dict ({detail})")
    model.features.load_state_dict({k.removeprefix("features."): state[k] for k in conv})
    with torch.no_grad():
        model.fc7.weight.copy_(state["classifier.3.weight"].reshape(model.fc7.weight.shape))
        model.fc7.bias.copy_(state["classifier.3.bias"])
        if model.fc6.kernel_size == (7, 7):  # torchvision's fc6 input is pool5 flattened as (512, 7, 7)
            model.fc6.weight.copy_(state["classifier.0.weight"].reshape(model.fc6.weight.shape))
            model.fc6.bias.copy_(state["classifier.0.bias"])
            return f"{name} conv weights ({len(conv)} tensors) + fc6 (7x7) + fc7 from {path}"
    seed_fc6 = "fc6 random (the seed's 1x1 fc6; --set fc6=7x7 loads VGG16's)"
    return f"{name} conv weights ({len(conv)} tensors) + fc7 from {path}; {seed_fc6}"


def build_fcn(num_classes: int, settings: dict, warn: Warn = print, *, stride: int) -> tuple[nn.Module, str]:
    """FCN-<stride>s from settings `dropout`, `norm`, `fc6` and `weights` (null, auto, imagenet: torchvision's
    ImageNet VGG16 / VGG16-BN, or a state dict file; see models.pretrained). Returns the model and
    `<source>: what was loaded`."""
    norm = settings.get("norm", "none")
    dropout, fc6 = float(settings.get("dropout", 0.5)), settings.get("fc6", "1x1")
    model = FCN(num_classes, stride=stride, dropout=dropout, norm=norm, fc6=fc6)
    weights = vgg_weights(settings.get("weights"), "vgg16_bn" if norm == "batch" else "vgg16", warn)
    if weights.path is None:
        return model, f"{weights.source}: {weights.detail}"
    return model, f"{weights.source}: {load_vgg16_weights(model, weights.path)}"
