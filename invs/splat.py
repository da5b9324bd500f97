"""Forward warping by softmax splatting (Niklaus & Liu, "Softmax Splatting for Video Frame Interpolation", CVPR 2020).

Each source point carries a value (RGB, features, ...) and a continuous target position. It is splatted bilinearly
onto its four nearest target pixels, weighted by ``exp(Z)`` where ``Z`` is an importance metric (for view synthesis:
scaled inverse depth, so nearer surfaces win). Every target pixel gets the importance-weighted average of the points
landing on it::

    out[p] = sum_k w_k(p) exp(Z_k) value_k / sum_k w_k(p) exp(Z_k)

where ``w_k(p)`` is point k's bilinear weight on pixel p. The larger the scale of ``Z``, the closer this comes to a
hard z-buffer; equal importances give the plain bilinear average. Pure PyTorch, the same code on CPU and CUDA.

Conventions (shared by every function here):

* Continuous pixel coordinates, in pixels: the image spans ``[0, W] x [0, H]``; pixel (column ``i``, row ``j``) has
  its centre at ``(i + 0.5, j + 0.5)``. ``uv[..., 0]`` is ``u`` (column axis), ``uv[..., 1]`` is ``v`` (row axis).
  A point exactly at a pixel centre lands on that pixel only.
* Bilinear neighbours: ``x = u - 0.5``, ``y = v - 0.5``, ``x0 = floor(x)``, ``y0 = floor(y)``, ``fx = x - x0``,
  ``fy = y - y0``; pixels ``(x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)`` get weights
  ``(1-fx)(1-fy), fx(1-fy), (1-fx)fy, fx fy``. Neighbours outside the image are dropped: their weight is lost, not
  renormalised onto the others.
* Numerical stability: ``exp(Z - Zmax)`` replaces ``exp(Z)``, with ``Zmax`` the largest importance among the valid
  points of the same batch element (the ratio is unchanged). Consequence: a pixel reached only by points whose
  importance is more than about ``-log(eps)`` (18.4 for the default ``eps``) below ``Zmax`` has a denominator
  ``<= eps`` and outputs 0 although ``density`` shows it covered; keep the spread of ``Z`` over one image below that.
* All accumulation is in float32, whatever the input dtype (float16 and bfloat16 inputs are cast up); outputs are
  float32.
"""

from __future__ import annotations

import math

import torch

__all__ = ["softmax_splat"]


def _check_inputs(
    values: torch.Tensor,
    uv: torch.Tensor,
    importance: torch.Tensor,
    valid: torch.Tensor,
    height: int,
    width: int,
    eps: float,
) -> None:
    if not isinstance(values, torch.Tensor) or values.ndim != 3:
        raise ValueError(f"values must be a tensor of shape (B, C, N); got {_shape(values)}")
    b, _, n = values.shape
    if not isinstance(uv, torch.Tensor) or tuple(uv.shape) != (b, n, 2):
        raise ValueError(
            f"uv must have shape (B, N, 2) = {(b, n, 2)} to match values {tuple(values.shape)}; got {_shape(uv)}"
        )
    if not isinstance(importance, torch.Tensor) or tuple(importance.shape) != (b, n):
        raise ValueError(f"importance must have shape (B, N) = {(b, n)}; got {_shape(importance)}")
    if not isinstance(valid, torch.Tensor) or tuple(valid.shape) != (b, n):
        raise ValueError(f"valid must have shape (B, N) = {(b, n)}; got {_shape(valid)}")
    for name, t in (("values", values), ("uv", uv), ("importance", importance)):
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor; got {t.dtype}")
    if valid.dtype != torch.bool:
        raise TypeError(f"valid must be a bool tensor; got {valid.dtype}")
    devices = {t.device for t in (values, uv, importance, valid)}
    if len(devices) != 1:
        raise ValueError(f"values, uv, importance and valid must be on one device; got {sorted(map(str, devices))}")
    for name, size in (("height", height), ("width", width)):
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError(f"{name} must be a positive int; got {size!r}")
    if not (eps >= 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a finite number >= 0; got {eps!r}")


def _shape(x: object) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__


def _softmax_factors(
    uv: torch.Tensor, importance: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(u, v, ok, ez)``, (B, N) each, float32 (``ok`` bool): the target coordinates in pixels (0 where not
    ``ok``), the points to splat (``valid`` with finite ``uv`` and ``importance``), and their softmax factors
    ``exp(Z - Zmax)``, stabilised per batch element (0 where not ``ok``)."""
    f32 = torch.float32
    uv = uv.to(f32)
    z = importance.to(f32)
    u, v = uv[..., 0], uv[..., 1]
    ok = valid & torch.isfinite(u) & torch.isfinite(v) & torch.isfinite(z)  # (B, N)
    u = torch.where(ok, u, 0.0)  # keep NaN/inf out of floor/cast; these points are routed to the trash slot below
    v = torch.where(ok, v, 0.0)

    # Softmax weights, stabilised per batch element; exp(-inf) = 0 for the invalid points.
    z = torch.where(ok, z, float("-inf"))
    zmax = z.amax(dim=1, keepdim=True)
    zmax = torch.where(torch.isfinite(zmax), zmax, 0.0)  # a batch element with no valid point
    ez = torch.exp(z - zmax)  # (B, N)
    return u, v, ok, ez


def _bilinear_pairs(
    u: torch.Tensor, v: torch.Tensor, ok: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index (B*4*N,), w (B, 4, N))``: the flat (batch, pixel) index into B*H*W + 1 of every (point, neighbour)
    pair of the points at ``u``, ``v`` (B, N) pixels (the trash slot B*H*W for pairs off the image or of points
    not ``ok``), and the pairs' plain bilinear weights (neighbour order ``(y0, x0), (y0, x0 + 1), (y0 + 1, x0),
    (y0 + 1, x0 + 1)``)."""
    b, n = u.shape
    hw = height * width
    # Bilinear neighbours, separably per axis: index 0 is the floor neighbour, 1 the next one.
    x = u - 0.5
    y = v - 0.5
    x0 = torch.floor(x)
    y0 = torch.floor(y)
    fx = x - x0
    fy = y - y0
    wx = torch.stack((1.0 - fx, fx), dim=1)  # (B, 2, N)
    wy = torch.stack((1.0 - fy, fy), dim=1)
    # Clamp before the integer cast so far-away points cannot overflow; [-1, size] keeps inside/outside intact.
    ix = torch.stack((x0, x0 + 1.0), dim=1).clamp_(-1.0, float(width)).long()
    iy = torch.stack((y0, y0 + 1.0), dim=1).clamp_(-1.0, float(height)).long()
    in_x = (ix >= 0) & (ix < width)
    in_y = (iy >= 0) & (iy < height) & ok[:, None]
    rows = iy * width + torch.arange(b, device=u.device).view(b, 1, 1) * hw  # flat (batch, row) offset, (B, 2, N)

    # (B, 2[y], 2[x], N) -> (B*4*N,): one flat (batch, pixel) index per (point, neighbour) pair. Pairs that fall
    # outside the image, or belong to invalid points, go to one extra trash slot at index B*H*W, so their (possibly
    # non-finite) contributions never touch a real pixel.
    trash = b * hw
    inside = in_y[:, :, None] & in_x[:, None]
    index = torch.where(inside, rows[:, :, None] + ix[:, None], trash).reshape(-1)
    w = (wy[:, :, None] * wx[:, None]).reshape(b, 4, n)  # plain bilinear weights
    return index, w


def _accumulate(
    values: torch.Tensor, index: torch.Tensor, w: torch.Tensor, ez: torch.Tensor, slots: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(num (C, slots), den (slots,), density (slots,))``, float32: the sums over the (point, neighbour) pairs at
    ``index`` (B*4*N,) of ``values`` (B, C, N) times the softmax-weighted bilinear weights ``w * ez`` (``w``
    (B, 4, N), ``ez`` (B, N)), of those weights, and of ``w`` alone; ``slots`` is B*H*W + 1 (the trash slot)."""
    f32 = torch.float32
    device = values.device
    c = values.shape[1]
    e = w * ez[:, None]  # softmax-weighted bilinear weights, (B, 4, N)

    values = values.to(f32)
    num = torch.zeros(c, slots, dtype=f32, device=device)  # one row per channel, plus the trash slot
    den = torch.zeros(slots, dtype=f32, device=device)
    density = torch.zeros(slots, dtype=f32, device=device)
    for ch in range(c):  # a loop over channels, not points: each call covers all B*4*N pairs
        num[ch].index_add_(0, index, (e * values[:, ch, None, :]).reshape(-1))
    den.index_add_(0, index, e.reshape(-1))
    density.index_add_(0, index, w.reshape(-1))
    return num, den, density


def _normalise(
    num: torch.Tensor,
    den: torch.Tensor,
    density: torch.Tensor,
    shape: tuple[int, int, int, int],
    eps: float,
    differentiable: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out (B, C, H, W), density (B, 1, H, W))``, float32, from the sums of :func:`_accumulate` (their trash
    slot dropped): ``num / den`` where ``den > eps``, else 0; ``shape`` is (B, C, H, W). ``differentiable``
    keeps the result in the autograd graph."""
    b, c, height, width = shape
    f32 = torch.float32
    trash = b * height * width
    den = den[:trash].view(b, 1, height, width)
    # 1 / den where covered, else 0; clamping (not where on a reciprocal) keeps inf out of the gradient.
    inv = (den > eps) / den.clamp_min(max(eps, torch.finfo(f32).tiny))
    num = num[:, :trash].view(c, b, height, width).transpose(0, 1)  # (B, C, H, W) view
    density = density[:trash].view(b, 1, height, width)
    if differentiable:
        return (num * inv).contiguous(), density  # differentiable in values, uv (bilinear) and importance
    out = torch.empty(b, c, height, width, dtype=f32, device=num.device)
    torch.mul(num, inv, out=out)  # one pass, straight into a contiguous output
    return out, density


def softmax_splat(
    values: torch.Tensor,
    uv: torch.Tensor,
    importance: torch.Tensor,
    valid: torch.Tensor,
    height: int,
    width: int,
    eps: float = 1e-8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax-splat per-point values onto a ``height x width`` image (see the module docstring for conventions).

    Args:
        values: ``(B, C, N)`` floating-point values to splat (RGB, or any extra channels).
        uv: ``(B, N, 2)`` continuous target coordinates in pixels, ``u`` = column, ``v`` = row; the image spans
            ``[0, W] x [0, H]`` and pixel ``(i, j)`` has its centre at ``(i + 0.5, j + 0.5)``.
        importance: ``(B, N)`` importance metric ``Z`` (larger wins, e.g. scaled inverse depth). Only differences
            within one batch element matter.
        valid: ``(B, N)`` bool, the points to splat. Points with a non-finite ``uv`` or ``importance`` are treated
            as invalid; the values of invalid points are never read into the output (NaN there is harmless),
            while a non-finite value of a valid point spreads to the pixels it lands on.
        height: ``H``, output height in pixels.
        width: ``W``, output width in pixels.
        eps: pixels whose softmax denominator ``sum_k w_k exp(Z_k - Zmax)`` is ``<= eps`` get 0.

    Returns:
        ``(out, density)``: ``out`` ``(B, C, H, W)`` float32, the importance-weighted average of the values
        splatted on each pixel (0 where nothing, or too little, lands); ``density`` ``(B, 1, H, W)`` float32, the
        sum of the plain bilinear weights landing on each pixel (no ``exp`` factor): how much splatted mass covers
        it, for callers to threshold into a visibility mask. A point with all four neighbours inside the image adds
        exactly 1 to the total of ``density``. Differentiable (autograd) in ``values``, ``uv`` and ``importance``.

    Raises:
        ValueError: on mismatched shapes, tensors on different devices, or a non-positive ``height``/``width``.
        TypeError: on non-floating ``values``/``uv``/``importance`` or a non-bool ``valid``.

    Cost: one pass over ``4 * B * N`` (point, neighbour) pairs per output channel plus two (denominator, density),
    each a single ``index_add_`` on a flattened ``(batch, pixel)`` index, batched over ``B``.
    """
    _check_inputs(values, uv, importance, valid, height, width, eps)
    b, c, n = values.shape
    if n == 0:
        return (
            torch.zeros(b, c, height, width, dtype=torch.float32, device=values.device),
            torch.zeros(b, 1, height, width, dtype=torch.float32, device=values.device),
        )
    u, v, ok, ez = _softmax_factors(uv, importance, valid)
    index, w = _bilinear_pairs(u, v, ok, height, width)
    num, den, density = _accumulate(values, index, w, ez, b * height * width + 1)
    differentiable = torch.is_grad_enabled() and any(t.requires_grad for t in (values, uv, importance))
    return _normalise(num, den, density, (b, c, height, width), eps, differentiable)
