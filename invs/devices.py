"""The torch device an entry point runs its models on: one that exists on this machine."""

from __future__ import annotations

from invs.errors import InvsError


def pick_device(requested: str | None = None) -> str:
    """``requested`` (``"cpu"`` or ``"cuda"``) if this machine has it, else one line of :class:`InvsError`;
    None: ``"cuda"`` when a CUDA device is visible, else ``"cpu"``."""
    import torch

    if requested not in (None, "cpu", "cuda"):
        raise InvsError(f"--device must be cpu or cuda, got {requested!r}")
    available = torch.cuda.is_available()
    if requested == "cuda" and not available:
        raise InvsError("--device cuda: this machine has no CUDA device (torch sees none); use --device cpu")
    return requested or ("cuda" if available else "cpu")
