"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric"), AlexNet v0.1.

The network is the reference one: AlexNet's five ReLU feature maps (torchvision's ``alexnet().features`` layout,
ImageNet weights), each unit-normalised over channels, squared differences weighted by the learned 1x1 heads of
LPIPS v0.1, averaged over pixels and summed over layers; inputs in [0, 1] are mapped to [-1, 1] and shifted and
scaled as LPIPS does. Lower is more similar; 0 for identical images.

Why not ``torchmetrics``' or the ``lpips`` package's module: both build the backbone through torchvision, which
does not import beside this project's torch build. The layers here carry the same parameter names, so the same
files load:

* the heads: ``lpips_models/alex.pth`` shipped inside ``torchmetrics`` (the LPIPS v0.1 weights);
* the backbone: torchvision's ImageNet AlexNet checkpoint ``alexnet-owt-7be5be79.pth``, looked for in the torch
  hub cache (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``) or at ``INVS_LPIPS_ALEXNET``.

Nothing is downloaded. :func:`load_lpips` raises :class:`LpipsUnavailable` naming the file it looked for when
weights are absent; callers report ``lpips: null`` with that reason, never a made-up number.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
#: (in, out, kernel, stride, padding) of AlexNet's five convolutions; a max-pool precedes conv 2, 3 (torchvision).
ALEXNET_CONVS = ((3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1))
#: Indices in ``features`` after which LPIPS taps the ReLU outputs (torchvision's layer numbering).
TAPS = (1, 4, 7, 9, 11)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


class LpipsUnavailable(RuntimeError):
    """LPIPS weights are not on this machine (the message names the file looked for)."""


def alexnet_features(widths: tuple[int, ...] | None = None) -> nn.Sequential:
    """torchvision's ``alexnet().features`` (same indices, so its state dict loads); ``widths`` shrinks the five
    convolutions' output channels for tests."""
    layers: list[nn.Module] = []
    in_ch = 3
    for i, (_, out_ch, k, s, p) in enumerate(ALEXNET_CONVS):
        out_ch = widths[i] if widths else out_ch
        if i in (1, 2):
            layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
        layers += [nn.Conv2d(in_ch, out_ch, k, s, p), nn.ReLU(inplace=False)]
        in_ch = out_ch
    layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
    return nn.Sequential(*layers)


class _Head(nn.Module):
    """A 1x1 convolution to one channel, named as in LPIPS v0.1 (``model.1.weight``: a dropout slot precedes it)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class Lpips(nn.Module):
    """LPIPS distance per image ``(B,)`` for images ``(B, 3, H, W)`` in [0, 1] (H, W >= 32)."""

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        widths = [m.out_channels for m in features if isinstance(m, nn.Conv2d)]
        for k, ch in enumerate(widths):
            setattr(self, f"lin{k}", _Head(ch))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in TAPS:
                out.append(x)
        return out

    @torch.no_grad()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3 or min(a.shape[-2:]) < 32:
            raise ValueError(
                f"need two (B, 3, H >= 32, W >= 32) images of one shape, got {tuple(a.shape)}, {tuple(b.shape)}"
            )
        xa = ((a.float() * 2 - 1) - self.shift) / self.scale
        xb = ((b.float() * 2 - 1) - self.shift) / self.scale
        total = torch.zeros(a.shape[0], device=a.device)
        for k, (fa, fb) in enumerate(zip(self._taps(xa), self._taps(xb), strict=True)):
            na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + getattr(self, f"lin{k}")((na - nb) ** 2).mean(dim=(1, 2, 3))
        return total


def heads_file() -> Path:
    """The LPIPS v0.1 AlexNet heads shipped with torchmetrics."""
    import torchmetrics

    return Path(torchmetrics.__file__).parent / "functional" / "image" / "lpips_models" / "alex.pth"


def alexnet_file() -> Path:
    """Where the ImageNet AlexNet checkpoint is looked for (``INVS_LPIPS_ALEXNET``, else the torch hub cache)."""
    if os.environ.get("INVS_LPIPS_ALEXNET"):
        return Path(os.environ["INVS_LPIPS_ALEXNET"])
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


def load_lpips(device: str | torch.device = "cpu") -> Lpips:
    """The reference LPIPS-Alex network from files on this machine; :class:`LpipsUnavailable` if one is absent."""
    backbone, heads = alexnet_file(), heads_file()
    for path, what in ((backbone, "ImageNet AlexNet weights (torchvision's)"), (heads, "LPIPS v0.1 heads")):
        if not path.is_file():
            raise LpipsUnavailable(f"{what} not found at {path}")
    model = Lpips(alexnet_features())
    state = torch.load(backbone, map_location="cpu", weights_only=True)
    model.features.load_state_dict({k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")})
    result = model.load_state_dict(torch.load(heads, map_location="cpu", weights_only=True), strict=False)
    if result.unexpected_keys or any(k.startswith("lin") for k in result.missing_keys):
        raise LpipsUnavailable(f"{heads} does not hold the LPIPS v0.1 AlexNet heads ({result})")
    return model.to(device)
