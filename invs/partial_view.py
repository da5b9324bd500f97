"""The partial target view and its masks: our precise definitions of what iNVS describes in words.

All tensors are batched (leading B), float32, on any device (one code path for CPU and CUDA); cameras follow
:mod:`invs.cameras` (``K`` in pixels with pixel centres at ``+0.5``, ``c2w`` OpenCV, depth planar z, 0 = no surface)
and lifting and projection are :mod:`invs.geometry`'s. Images are (B, C, H, W). ``tau`` below is
:data:`SAME_SURFACE_TOLERANCE` (0.02 world units): two depths closer than that show the same surface point, the
tolerance the sanity law (:mod:`preprocess.law`) sees with.

1. **Lift.** Every source pixel with depth > 0 becomes a 3D point (a *sample*) at its pixel centre. Each carries its
   colour and the angle at the 3D point between its source ray and its target ray.
2. **Warp** (:func:`warp_to_target`, ``cover="mesh"``): the source is forward-warped as a surface, not as points.

   * *One surface* (:func:`connected`): two neighbouring samples are joined when the depth step between them is at
     most ``tan(85 deg)`` times their lateral distance (a surface seen within 85 degrees of its normal), or when
     their step in inverse depth repeats the next step along the same line within a factor 2 (inverse depth is
     affine on screen for a plane, so a plane seen at any angle repeats its steps; a discontinuity is a lone step).
   * *Mesh* (:func:`mesh_triangles`): two triangles per 2x2 block of samples, split along the diagonal with the
     smaller depth step, each kept when its three edges are joined. A triangle whose winding flips in the target
     shows the target its back and is dropped (so are the points of such surfaces).
   * *Footprints* (:func:`footprint_quadrants`): a sample is also the corner of four quadrants, one per 2x2 block
     around it; the quadrants of blocks without both triangles (at silhouettes and discontinuities) are added,
     with the sample's inverse depth extrapolated along its gradient. Along each axis a quadrant reaches to the
     neighbour's position (open there) when the neighbour shows the same surface, halfway (the sample's own
     square) when it shows another surface, where the edge between the two is unknown, and towards background as
     far as the source's anti-aliased coverage puts the silhouette (``alpha_sample + alpha_neighbour - 1/2``
     pixels; halfway without alpha). A quadrant shrinks until its depth stays within ``tau`` of its sample's.
     Towards background the surface may recede faster than its gradient says (an occluding contour turns away
     from the source; where the gradient is unknown the quadrant faces the source and a target seeing it from the
     side sees nothing of it), so such a quadrant is drawn a second time as a *receding wedge*: from the sample to
     its outer vertices pushed back by ``tau``, at most :data:`WEDGE_SLOPE` pixel widths; the wedge only fills
     pixels nothing else covers.
   * *Rasterise* (:func:`rasterize_triangles`): every target pixel centre inside a triangle gets the triangle's
     perspective-correct interpolation of its samples' values; overlapping triangles blend with the softmax
     weights of the splat (``exp(Z)``, ``Z`` the inverse target depth normalised over the pair to [-10, 10]).
     A triangle with an edge only the slope test joined (a lone steep step, which may bridge a near and a far
     leg) covers only the pixels whose point lies within ``tau`` in depth of one of its samples.
   * *Points*: the samples are also softmax-splatted as before (:func:`invs.splat.softmax_splat`, bilinear
     footprints weighted by ``exp(Z)``); they give the pixels no triangle reaches (structures thinner than a
     target pixel) their values.

   ``cover="points"`` is the former partial view, points alone: where the target magnifies the source, points
   land more than a pixel apart and leave cracks.
3. **Coverage.** A target pixel is *covered* when its centre lies inside a kept triangle, or at least one (facing)
   sample lands inside its pixel square (nearest-pixel hit count >= 1).
4. **Epipolar occlusion region** (:func:`occlusion_region`). A target pixel is *known background* only when the
   source proves its whole ray empty: every sample of the target ray inside the object's bounding sphere
   (radius ``sqrt(3)/2`` around the origin for unit-normalised objects) projects inside the source image onto a
   background pixel, or in front of the visible surface there. Samples outside the source frame are unknown,
   never empty. Everything else is the occlusion region (``epipolar.png`` = 255): the surface the source sees
   and everything that may hide behind it. The source's foreground is dilated by one pixel and its depth
   min-pooled over 3x3 for this test, so anti-aliased edges never prove emptiness.
5. **Soft mask** (:func:`soft_mask`, 1 = generate, 0 = keep). Covered pixels get ``clip(angle / (2 *
   half_angle), 0, 1)``: 0 where source and target rays agree, 0.5 at ``half_angle`` (45 degrees by default), 1 from
   90 degrees on. A covered pixel can show a point that, in the target, lies behind a nearer surface the source
   never saw; such points usually arrive at large angles, so large angles lean to regenerating (a linear
   angle/180 map leaves >1% of unseen pixels below diffusers' 0.5 binarisation; 45 degrees keeps it near 0.1%).
   A pixel the mesh covers is raised to ``clip(gap / (2 tau), 0, 1)``, ``gap`` the source depth between its
   surface point and the nearest sample it is built from: 0.5 where no sample vouches for it within ``tau``
   (inside a triangle across a steep surface the source sees at a grazing angle); a receding wedge counts its
   gap twice (the source never sees past its silhouette: 1 at the wedge's far edge).
   Uncovered pixels in the occlusion region get 1; known background gets 0 and is white in the partial image.

The measurements behind this design (the alternatives tried, their coverage and the law) are in
``docs/partial_view.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from invs.cameras import BOUNDING_RADIUS
from invs.geometry import check_shape, lift, pixel_grid, pixel_rays, project, ray_angle_deg, unproject
from invs.splat import softmax_splat

IMPORTANCE_RANGE = 10.0
#: Two source samples closer than this in depth (world units) show the same surface point (the law's tolerance).
SAME_SURFACE_TOLERANCE = 0.02
#: A surface seen at more than this from its normal is taken for a depth discontinuity (see :func:`connected`).
MAX_GRAZING_DEG = 85.0
#: A receding wedge falls back at most this many source pixel widths in depth across its footprint (and at most
#: :data:`SAME_SURFACE_TOLERANCE`): seen from the side, a target sees it stand out about as many pixels.
WEDGE_SLOPE = 2.0
#: Consecutive inverse-depth steps within this factor of each other continue one plane (see :func:`connected`).
PLANE_STEP_RATIO = 2.0


def inverse_depth_bounds(z: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi), each (B, 1): the smallest and largest inverse depth of the valid points of each batch element."""
    inv = torch.where(valid, 1.0 / z.clamp_min(1e-6), torch.zeros_like(z))
    big = torch.finfo(inv.dtype).max
    lo = torch.where(valid, inv, torch.full_like(inv, big)).amin(dim=1, keepdim=True)
    hi = torch.where(valid, inv, torch.full_like(inv, -big)).amax(dim=1, keepdim=True)
    return lo, hi


def normalised_importance(inv: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Inverse depth ``inv`` mapped from ``[lo, hi]`` (broadcast) to [-10, 10]: the softmax importance."""
    scaled = (inv - lo) / (hi - lo).clamp_min(1e-6)
    return (2.0 * scaled - 1.0) * IMPORTANCE_RANGE


def importance_from_depth(z: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Inverse depth normalised per batch element over valid points to [-10, 10] (nearer is larger)."""
    lo, hi = inverse_depth_bounds(z, valid)
    inv = torch.where(valid, 1.0 / z.clamp_min(1e-6), torch.zeros_like(z))
    return torch.where(valid, normalised_importance(inv, lo, hi), torch.zeros_like(inv))


def nearest_hits(uv: torch.Tensor, valid: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H, W) number of valid points whose position falls inside each pixel's square."""
    b = uv.shape[0]
    col = torch.floor(uv[..., 0]).long()
    row = torch.floor(uv[..., 1]).long()
    ok = valid & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    index = (torch.arange(b, device=uv.device)[:, None] * height + row) * width + col
    counts = torch.zeros(b * height * width, device=uv.device, dtype=torch.float32)
    counts.index_add_(0, index[ok], torch.ones_like(index[ok], dtype=torch.float32))
    return counts.view(b, height, width)


def _shifted(x: torch.Tensor, dr: int, dc: int) -> torch.Tensor:
    """(B, H, W): ``x[:, r + dr, c + dc]``, zero (False) where that falls outside the image."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    rows_out, rows_in = slice(max(-dr, 0), h - max(dr, 0)), slice(max(dr, 0), h + min(dr, 0))
    cols_out, cols_in = slice(max(-dc, 0), w - max(dc, 0)), slice(max(dc, 0), w + min(dc, 0))
    out[:, rows_out, cols_out] = x[:, rows_in, cols_in]
    return out


def _neighbour(
    x: torch.Tensor, flat: torch.Tensor, row: torch.Tensor, col: torch.Tensor, dr: int, dc: int
) -> torch.Tensor:
    """``x`` (B, H, W) at the neighbours (row + dr, col + dc) of pixels given by flat (batch, pixel) indices; zero
    (False) off the image."""
    h, w = x.shape[-2:]
    inside = (row + dr >= 0) & (row + dr < h) & (col + dc >= 0) & (col + dc < w)
    index = torch.where(inside, flat + dr * w + dc, flat)
    value = x.reshape(-1)[index]
    return torch.where(inside, value, torch.zeros_like(value))


def inverse(depth: torch.Tensor) -> torch.Tensor:
    """1 / depth where depth > 0, else 0."""
    return torch.where(depth > 0, 1.0 / depth.clamp_min(1e-12), torch.zeros_like(depth))


def connected(
    depth: torch.Tensor, K: torch.Tensor, dr: int, dc: int, max_slope: float, tolerance: float = SAME_SURFACE_TOLERANCE
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(joined, sure)``, (B, H, W) bool each: pixel (r, c) and its neighbour (r + dr, c + dc) show one surface
    (see the module docstring); ``sure`` where that is not the slope test's guess alone: their depths are within
    ``tolerance`` or their step repeats along the line (a plane).

    Both have depth, and either the depth step between them is at most ``max_slope`` times their lateral distance
    (the pixel offset at their mean depth; a surface seen within ``atan(max_slope)`` of its normal), or the step in
    inverse depth agrees within a factor :data:`PLANE_STEP_RATIO` with the next step along the same line on either
    side (inverse depth is affine on screen for a plane, so a plane seen at any angle repeats its steps; a
    discontinuity is a lone step).
    """
    other = _shifted(depth, dr, dc)
    lateral = 0.5 * (depth + other) * torch.hypot(dc / K[:, 0, 0], dr / K[:, 1, 1])[:, None, None]
    shallow = (other - depth).abs() <= max_slope * lateral
    inv = inverse(depth)
    step = _shifted(inv, dr, dc) - inv
    before = torch.where(_shifted(depth, -dr, -dc) > 0, inv - _shifted(inv, -dr, -dc), torch.zeros_like(inv))
    after = torch.where(_shifted(depth, 2 * dr, 2 * dc) > 0, _shifted(inv, 2 * dr, 2 * dc) - _shifted(inv, dr, dc), 0.0)

    def repeats(neighbour: torch.Tensor) -> torch.Tensor:
        ratio = PLANE_STEP_RATIO
        return (
            (neighbour * step > 0) & (neighbour.abs() * ratio >= step.abs()) & (step.abs() * ratio >= neighbour.abs())
        )

    both = (depth > 0) & (other > 0)
    sure = both & (((other - depth).abs() <= tolerance) | repeats(before) | repeats(after))
    return sure | (both & shallow), sure


@dataclass
class Fragments:
    """Target pixel centres inside triangles: one row per (triangle, pixel) pair."""

    pixel: torch.Tensor  # (F,) flat (batch, pixel) index into B*H*W
    weights: torch.Tensor  # (F, 3) perspective-correct barycentric weights of the triangle's corners
    corners: torch.Tensor  # (F, 3) the corners' vertex indices
    inv_depth: torch.Tensor  # (F,) 1 / target depth at the pixel centre
    triangle: torch.Tensor  # (F,) index of the fragment's triangle


def rasterize_triangles(
    uv: torch.Tensor,
    z: torch.Tensor,
    triangles: torch.Tensor,
    batch: torch.Tensor,
    height: int,
    width: int,
    open_far_edge: torch.Tensor | None = None,
    max_pixels: int = 4096,
) -> Fragments:
    """The target pixel centres inside each triangle.

    ``uv`` (V, 2) and ``z`` (V,) are the vertices' target positions and depths, ``triangles`` (M, 3) vertex
    indices and ``batch`` (M,) each triangle's batch element. A pixel is inside when its centre has barycentric
    coordinates ``>= 0``: a pixel on a shared edge belongs to both triangles (blending makes that harmless); for
    triangles flagged in ``open_far_edge`` (M,) bool, the edge opposite the first corner is excluded.
    Triangles whose bounding box holds more than ``max_pixels`` pixel centres are skipped (a bound on memory).
    Vectorised: every bounding box is enumerated with one ``repeat_interleave``, so the cost is the sum of the
    boxes, however uneven.
    """
    device = uv.device
    p = uv[triangles]  # (M, 3, 2)
    lo = torch.ceil(p.amin(1) - 0.5).clamp(min=0)
    hi = torch.minimum(torch.floor(p.amax(1) - 0.5), torch.tensor([width - 1.0, height - 1.0], device=device))
    size = (hi - lo + 1).clamp(min=0)
    count = size[:, 0] * size[:, 1]
    count = torch.where(count <= max_pixels, count, torch.zeros_like(count)).long()
    tri = torch.repeat_interleave(torch.arange(len(triangles), device=device), count)
    k = torch.arange(len(tri), device=device) - (torch.cumsum(count, 0) - count)[tri]
    nx = size[tri, 0].long()
    col = lo[tri, 0].long() + k % nx
    row = lo[tri, 1].long() + torch.div(k, nx, rounding_mode="floor")
    q = p[tri] - (torch.stack([col, row], -1).to(p.dtype) + 0.5)[:, None, :]  # corners relative to the pixel centre
    # Barycentric coordinate of corner i: the signed area the other two corners span with the pixel centre.
    q1, q2 = q.roll(-1, dims=1), q.roll(-2, dims=1)
    e = q1[..., 0] * q2[..., 1] - q1[..., 1] * q2[..., 0]  # (F, 3)
    area = e.sum(1, keepdim=True)
    ok = area[:, 0].abs() > 1e-9
    lam = e / torch.where(ok[:, None], area, torch.ones_like(area))
    inside = ok & (lam >= -1e-6).all(1)
    if open_far_edge is not None:
        inside &= ~open_far_edge[tri] | (lam[:, 0] > 1e-6)
    tri, lam = tri[inside], lam[inside].clamp_min(0.0)
    corners = triangles[tri]
    inv_z = 1.0 / z[corners]  # (F, 3)
    inv_depth = (lam * inv_z).sum(1)  # inverse depth is affine on screen: exact at the pixel centre
    weights = lam * inv_z / inv_depth.clamp_min(1e-12)[:, None]
    pixel = batch[tri] * (height * width) + (row * width + col)[inside]
    return Fragments(pixel=pixel, weights=weights, corners=corners, inv_depth=inv_depth, triangle=tri)


def mesh_triangles(
    depth: torch.Tensor,
    K: torch.Tensor,
    right: tuple[torch.Tensor, torch.Tensor],
    down: tuple[torch.Tensor, torch.Tensor],
    max_slope: float,
    tolerance: float = SAME_SURFACE_TOLERANCE,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The source's triangle mesh: ``(triangles (M, 3), complete (B, Hs - 1, Ws - 1) bool, sure (M,) bool)``.

    Two triangles per 2x2 block of pixel centres (corners ``a b / c d``), split along the diagonal whose ends
    differ less in depth; a triangle is kept when its three edges are :func:`connected` (``right`` and ``down``:
    each pixel's ``(joined, sure)`` to its right and lower neighbour). ``triangles`` holds flat (batch, pixel)
    indices into B*N of the kept ones, with positive signed area on the source screen (u right, v down);
    ``complete`` marks the blocks that kept both; ``sure`` the triangles whose three edges are sure.
    """
    b, hs, ws = depth.shape
    n = hs * ws
    device = depth.device
    diag, anti = connected(depth, K, 1, 1, max_slope, tolerance), connected(depth, K, 1, -1, max_slope, tolerance)

    def block(t: torch.Tensor, r0: int, c0: int) -> torch.Tensor:  # t at each block's corner (r0, c0), flat
        return t[:, r0 : r0 + hs - 1, c0 : c0 + ws - 1].reshape(t.shape[0], -1)

    index = torch.arange(n, device=device).view(1, hs, ws)
    ia, ib, ic, id_ = (block(index, r0, c0)[0] for r0, c0 in ((0, 0), (0, 1), (1, 0), (1, 1)))
    zf = depth.reshape(b, -1)
    along_ad = (zf[:, ia] - zf[:, id_]).abs() <= (zf[:, ib] - zf[:, ic]).abs()

    def kept(k: int) -> tuple[torch.Tensor, torch.Tensor]:  # both triangles' edges all joined (k=0) or sure (1)
        ab, cd, ac, bd = block(right[k], 0, 0), block(right[k], 1, 0), block(down[k], 0, 0), block(down[k], 0, 1)
        ad, bc = block(diag[k], 0, 0), block(anti[k], 0, 1)
        return torch.where(along_ad, ab & bd & ad, ab & bc & ac), torch.where(along_ad, ad & cd & ac, bd & cd & bc)

    (keep1, keep2), (sure1, sure2) = kept(0), kept(1)
    first = torch.where(along_ad[..., None], torch.stack([ia, ib, id_], -1), torch.stack([ia, ib, ic], -1))
    second = torch.where(along_ad[..., None], torch.stack([ia, id_, ic], -1), torch.stack([ib, id_, ic], -1))
    offset = (torch.arange(b, device=device) * n)[:, None, None]
    triangles = torch.cat([(first + offset)[keep1], (second + offset)[keep2]])
    sure = torch.cat([sure1[keep1], sure2[keep2]])
    return triangles, (keep1 & keep2).view(b, hs - 1, ws - 1), sure


@dataclass
class Footprints:
    """The silhouette samples' footprints outside the mesh, as extra vertices and triangles."""

    src_uv: torch.Tensor  # (V, 2) source pixel position of every extra vertex
    inv_depth: torch.Tensor  # (V,) its extrapolated inverse source depth
    owner: torch.Tensor  # (V,) flat (batch, pixel) index into B*N of the sample it extends
    triangles: torch.Tensor  # (T, 3) vertex indices: samples below B*N, extra vertex k at B*N + k
    wedge: torch.Tensor  # (V,) bool: the vertex belongs to a receding wedge


def _inverse_depth_gradient(
    inv: torch.Tensor, right: torch.Tensor, left: torch.Tensor, down: torch.Tensor, up: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gx, gy)``, (B, Hs, Ws) each: the gradient of inverse depth ``inv`` (1 / world units per source pixel)
    along columns and rows, central where a pixel is :func:`connected` on both sides, one-sided where on one,
    zero where on neither."""
    zero = torch.zeros_like(inv)
    w_r, w_l, w_d, w_u = _shifted(inv, 0, 1), _shifted(inv, 0, -1), _shifted(inv, 1, 0), _shifted(inv, -1, 0)
    gx = torch.where(right & left, 0.5 * (w_r - w_l), torch.where(right, w_r - inv, torch.where(left, inv - w_l, zero)))
    gy = torch.where(down & up, 0.5 * (w_d - w_u), torch.where(down, w_d - inv, torch.where(up, inv - w_u, zero)))
    return gx, gy


@dataclass
class _Samples:
    """Source samples by flat (batch, pixel) index ``centre`` (m,) into B*N, with their ``row`` and ``col`` (m,)."""

    centre: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor

    @classmethod
    def where(cls, mask: torch.Tensor) -> _Samples:
        """The samples where ``mask`` (B, Hs, Ws) bool holds."""
        n, ws = mask.shape[-2] * mask.shape[-1], mask.shape[-1]
        centre = torch.nonzero(mask.reshape(-1))[:, 0]
        pixel = centre % n
        return cls(centre, torch.div(pixel, ws, rounding_mode="floor"), pixel % ws)

    def at(self, x: torch.Tensor, dr: int = 0, dc: int = 0) -> torch.Tensor:
        """(m,): ``x`` (B, Hs, Ws) at each sample's neighbour (row + dr, col + dc); zero (False) off the image."""
        return _neighbour(x, self.centre, self.row, self.col, dr, dc)


def _quadrant_offsets(
    s: _Samples,
    depth: torch.Tensor,
    cover: torch.Tensor | None,
    joined: dict[tuple[int, int], torch.Tensor],
    sx: int,
    sy: int,
    tolerance: float,
) -> torch.Tensor:
    """(m, 3, 2) offsets in source pixels (u, v) from each sample to its quadrant's edge point along x, far corner
    and edge point along y, before shrinking; the quadrant lies towards (``sx``, ``sy``), each +-1. ``cover``
    (B, Hs, Ws) is the source's coverage in [0, 1] (None: the silhouette halfway), ``joined`` maps a neighbour
    offset (dr, dc) to the (B, Hs, Ws) bool :func:`connected` mask towards it, ``tolerance`` in world units."""
    reach = []
    for dr, dc in ((0, sx), (sy, 0)):
        background = s.at(depth, dr, dc) <= 0
        silhouette = (s.at(cover) + s.at(cover, dr, dc) - 0.5).clamp(0.0, 1.0) if cover is not None else 0.5
        reach.append(torch.where(background, silhouette, torch.where(s.at(joined[(dr, dc)]), 1.0, 0.5)))
    corner = s.at(depth, sy, sx)
    other_corner = (corner > 0) & ((corner - s.at(depth)).abs() > tolerance)
    ex, ey = (torch.where(other_corner, r.clamp(max=0.5), r)[:, None] for r in reach)
    # Edge point along x, far corner, edge point along y.
    zeros = torch.zeros_like(ex)
    return torch.stack([torch.cat([sx * ex, sx * ex, zeros], 1), torch.cat([zeros, sy * ey, sy * ey], 1)], -1)


def _shrink_factor(w: torch.Tensor, dw: torch.Tensor, tolerance: float) -> torch.Tensor:
    """(m, 1): the largest t in [0, 1] with ``|1 / (w + t dw) - 1 / w| <= tolerance`` (world units) at all three
    vertices; ``w`` (m, 1) the sample's inverse depth, ``dw`` (m, 3) the vertices' inverse-depth steps."""
    sign = torch.where(dw > 0, -1.0, 1.0)
    limit = tolerance * w * w / (dw.abs() * (1.0 + sign * tolerance * w)).clamp_min(1e-12)
    return torch.where(dw != 0, limit, torch.ones_like(limit)).amin(1, keepdim=True).clamp(0.0, 1.0)


def _receding_wedge(
    s: _Samples,
    depth: torch.Tensor,
    K: torch.Tensor,
    uv: torch.Tensor,
    w: torch.Tensor,
    quad_uv: torch.Tensor,
    quad_inv: torch.Tensor,
    sx: int,
    sy: int,
    tolerance: float,
    first: int,
) -> Footprints:
    """The receding wedges of the quadrants next to background (4 vertices each, numbered from ``first``).

    Towards background the surface beyond the sample may recede (an occluding contour turns away from the
    source) faster than its gradient says: the quadrant is drawn again as a wedge from the sample back to
    ``tolerance``, at most WEDGE_SLOPE pixel widths, behind the quadrant's outer vertices. ``uv`` (m, 2) and ``w``
    (m, 1) are the samples' source positions (pixels) and inverse depths, ``quad_uv`` (m, 3, 2) and ``quad_inv``
    (m, 3) their quadrants' vertices'.
    """
    n = depth.shape[-2] * depth.shape[-1]
    device = depth.device
    sel = torch.nonzero((s.at(depth, 0, sx) <= 0) | (s.at(depth, sy, 0) <= 0))[:, 0]
    k = len(sel)
    z4 = 1.0 / torch.cat([w, quad_inv], 1)[sel]  # (k, 4): the sample, then the quadrant's three vertices
    recede = (WEDGE_SLOPE * z4[:, :1] / K[torch.div(s.centre[sel], n, rounding_mode="floor"), 0, 0, None]).clamp(
        max=tolerance
    )
    z4 = z4 + recede * torch.tensor([0.0, 1.0, 1.0, 1.0], device=device)
    extra = first + torch.arange(4 * k, device=device).view(k, 4)
    triangles = [
        torch.stack([extra[:, 0], extra[:, 1], extra[:, 2]], -1),
        torch.stack([extra[:, 0], extra[:, 2], extra[:, 3]], -1),
    ]
    return Footprints(
        src_uv=torch.cat([uv[sel, None, :], quad_uv[sel]], 1).reshape(-1, 2),
        inv_depth=(1.0 / z4).reshape(-1),
        owner=s.centre[sel].repeat_interleave(4),
        triangles=torch.cat(triangles),
        wedge=torch.ones(4 * k, dtype=torch.bool, device=device),
    )


def _quadrant_footprints(
    s: _Samples,
    depth: torch.Tensor,
    offsets: torch.Tensor,
    inv: torch.Tensor,
    gx: torch.Tensor,
    gy: torch.Tensor,
    K: torch.Tensor,
    sx: int,
    sy: int,
    tolerance: float,
    first: int,
) -> tuple[Footprints, Footprints]:
    """``(quadrants, wedges)``: each sample's quadrant, ``offsets`` (m, 3, 2) in source pixels shrunk to within
    ``tolerance`` (world units) of the sample's depth, as 3 vertices and 2 triangles (vertices numbered from
    ``first``), and the :func:`_receding_wedge` of those next to background. ``inv``, ``gx``, ``gy`` (B, Hs, Ws):
    inverse depth and its gradient per source pixel."""
    m = len(s.centre)
    device = depth.device
    w = s.at(inv)[:, None]
    dw = s.at(gx)[:, None] * offsets[..., 0] + s.at(gy)[:, None] * offsets[..., 1]  # (m, 3)
    t = _shrink_factor(w, dw, tolerance)
    uv = torch.stack([s.col, s.row], -1).float() + 0.5
    quad_uv = uv[:, None, :] + t[..., None] * offsets  # (m, 3, 2)
    quad_inv = w + t * dw
    extra = first + torch.arange(3 * m, device=device).view(m, 3)
    triangles = [
        torch.stack([s.centre, extra[:, 0], extra[:, 1]], -1),
        torch.stack([s.centre, extra[:, 1], extra[:, 2]], -1),
    ]
    quadrants = Footprints(
        src_uv=quad_uv.reshape(-1, 2),
        inv_depth=quad_inv.reshape(-1),
        owner=s.centre.repeat_interleave(3),
        triangles=torch.cat(triangles),
        wedge=torch.zeros(3 * m, dtype=torch.bool, device=device),
    )
    wedges = _receding_wedge(s, depth, K, uv, w, quad_uv, quad_inv, sx, sy, tolerance, first + 3 * m)
    return quadrants, wedges


def footprint_quadrants(
    depth: torch.Tensor,
    right: torch.Tensor,
    down: torch.Tensor,
    complete: torch.Tensor,
    tolerance: float,
    K: torch.Tensor,
    alpha: torch.Tensor | None = None,
) -> Footprints:
    """The footprints of the samples next to an incomplete 2x2 block (see the module docstring).

    Around each sample, four quadrants, one per 2x2 block the sample is a corner of; a quadrant whose block lacks
    a triangle becomes two triangles from the sample to the quadrant's edge points and far corner. Along each axis
    the quadrant reaches to the neighbour's position when that neighbour shows the same surface, halfway (the
    sample's own square) when it shows another surface, and, towards background, as far as the source's coverage
    ``alpha`` (B, Hs, Ws) of the two pixels puts the silhouette: ``alpha_sample + alpha_neighbour - 1/2`` pixels,
    clipped to [0, 1] (halfway without ``alpha``). Their inverse depth is the sample's, extrapolated along its
    inverse-depth gradient (from its :func:`connected` neighbours; zero without any): inverse depth is affine on
    screen for a plane. A quadrant then shrinks towards its sample until its depth departs from the sample's by at
    most ``tolerance``. A quadrant next to background is drawn twice: as extrapolated, and as a *receding wedge*
    from the sample to its outer vertices pushed ``tolerance`` further back (only filling pixels nothing else
    covers), at most :data:`WEDGE_SLOPE` times the sample's pixel width (its depth over ``K[0, 0]``): where the
    gradient is unknown (a surface one pixel wide, or seen edge-on) the extrapolated quadrant faces the source, and
    a target seeing it from the side would see nothing of it.
    """
    b, hs, ws = depth.shape
    inv = inverse(depth)
    left, up = _shifted(right, 0, -1), _shifted(down, -1, 0)
    gx, gy = _inverse_depth_gradient(inv, right, left, down, up)
    padded = torch.zeros(b, hs + 1, ws + 1, dtype=torch.bool, device=depth.device)
    padded[:, 1:hs, 1:ws] = complete  # block (r, c) at [r + 1, c + 1]; blocks off the image are incomplete
    cover = None if alpha is None else alpha.float()
    joined = {(0, 1): right, (0, -1): left, (1, 0): down, (-1, 0): up}
    parts: list[Footprints] = []
    first = b * hs * ws  # extra vertex k at B*N + k
    for sx, sy in ((1, 1), (-1, 1), (1, -1), (-1, -1)):
        # The block holding pixels (r, c) and (r + sy, c + sx) has its top-left corner at (r - (sy < 0), ...).
        r0, c0 = int(sy > 0), int(sx > 0)
        s = _Samples.where((depth > 0) & ~padded[:, r0 : r0 + hs, c0 : c0 + ws])
        offsets = _quadrant_offsets(s, depth, cover, joined, sx, sy, tolerance)
        parts += _quadrant_footprints(s, depth, offsets, inv, gx, gy, K, sx, sy, tolerance, first)
        first += len(parts[-2].owner) + len(parts[-1].owner)
    fields = ("src_uv", "inv_depth", "owner", "triangles", "wedge")
    return Footprints(*(torch.cat([getattr(part, field) for part in parts]) for field in fields))


def lift_and_project(
    src_uv: torch.Tensor,
    inv_depth: torch.Tensor,
    batch: torch.Tensor,
    K_src: torch.Tensor,
    c2w_src: torch.Tensor,
    K_tgt: torch.Tensor,
    c2w_tgt: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Target ``(uv (V, 2), z (V,))`` of source positions (V, 2) at inverse depths (V,) in batch elements (V,)."""
    z = 1.0 / inv_depth.clamp_min(1e-12)
    world = lift(src_uv[:, None], z[:, None], K_src[batch], c2w_src[batch])  # one camera per vertex
    uv, zt = project(world, K_tgt[batch], c2w_tgt[batch])
    return uv[:, 0], zt[:, 0]


def pixel_facing(uv: torch.Tensor, right: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: the surface at each source pixel faces the target (its target image keeps the source's
    orientation), from the target positions ``uv`` (B, H, W, 2) of its :func:`connected` neighbours; True where a
    pixel lacks a neighbour along either axis (no surface orientation to test)."""
    left, up = _shifted(right, 0, -1), _shifted(down, -1, 0)

    def step(ahead: torch.Tensor, behind: torch.Tensor, dr: int, dc: int) -> torch.Tensor:
        forward = torch.stack([_shifted(uv[..., i], dr, dc) for i in range(2)], -1) - uv
        backward = uv - torch.stack([_shifted(uv[..., i], -dr, -dc) for i in range(2)], -1)
        return torch.where(ahead[..., None], forward, backward)

    du, dv = step(right, left, 0, 1), step(down, up, 1, 0)
    det = du[..., 0] * dv[..., 1] - du[..., 1] * dv[..., 0]
    return ~((right | left) & (down | up)) | (det > 0)


def _signed_area(uv: torch.Tensor) -> torch.Tensor:
    """Twice the signed area of triangles (M, 3, 2)."""
    d1, d2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    return d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]


@dataclass
class MeshWarp:
    """The source forward-warped as a triangle mesh (:func:`mesh_warp`)."""

    values: torch.Tensor  # (B, C, H, W) blended values where covered
    depth_gap: torch.Tensor  # (B, H, W) source depth from the covered point to the sample(s) it comes from
    covered: torch.Tensor  # (B, H, W) bool: some triangle holds the pixel centre
    facing: torch.Tensor  # (B, N) bool: the source pixel's surface faces the target (see :func:`pixel_facing`)


@dataclass
class _Vertices:
    """The mesh's vertex table: the B*N source pixel centres, then the footprints' extra vertices (V in all)."""

    uv: torch.Tensor  # (V, 2) target position, pixels
    z: torch.Tensor  # (V,) target depth
    src_uv: torch.Tensor  # (V, 2) source position, pixels
    src_z: torch.Tensor  # (V,) source depth
    owner: torch.Tensor  # (V,) flat (batch, pixel) index into B*N of the sample it belongs to
    ok: torch.Tensor  # (V,) bool: in front of the target camera, at a finite position
    wedge: torch.Tensor  # (V,) bool: the vertex belongs to a receding wedge


def _vertex_table(
    uv: torch.Tensor,
    z: torch.Tensor,
    valid: torch.Tensor,
    depth: torch.Tensor,
    foot: Footprints,
    cameras: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
) -> _Vertices:
    """The pixel centres (``uv`` (B, N, 2), ``z`` and ``valid`` (B, N) in the target, ``depth`` (B, Hs, Ws) float32
    in the source) followed by the footprints' vertices, lifted and projected with ``cameras`` ``(K_src, c2w_src,
    K_tgt, c2w_tgt)`` (float32)."""
    b, n = z.shape
    device = depth.device
    foot_uv, foot_z = lift_and_project(
        foot.src_uv, foot.inv_depth, torch.div(foot.owner, n, rounding_mode="floor"), *cameras
    )
    vert_uv = torch.cat([uv.reshape(-1, 2).float(), foot_uv])
    vert_z = torch.cat([z.reshape(-1).float(), foot_z])
    vert_src_z = torch.cat([depth.reshape(-1), 1.0 / foot.inv_depth.clamp_min(1e-12)])
    vert_src_uv = torch.cat([pixel_grid(*depth.shape[-2:], device).repeat(b, 1), foot.src_uv])
    vert_owner = torch.cat([torch.arange(b * n, device=device), foot.owner])
    vert_ok = torch.cat([valid.reshape(-1), foot_z > 1e-4]) & torch.isfinite(vert_uv).all(-1)
    vert_wedge = torch.cat([torch.zeros(b * n, dtype=torch.bool, device=device), foot.wedge])
    return _Vertices(vert_uv, vert_z, vert_src_uv, vert_src_z, vert_owner, vert_ok, vert_wedge)


def _facing_triangles(
    verts: _Vertices, triangles: torch.Tensor, sure: torch.Tensor, foot: Footprints
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(tri (M', 3), guess (M',) bool, is_footprint (M',) bool)``: the mesh ``triangles`` (M, 3) then the
    footprints' whose vertices are all ok and that face the target; ``guess`` marks the mesh triangles not all
    ``sure`` (M,), ``is_footprint`` the footprints' triangles."""
    device = triangles.device
    tri = torch.cat([triangles, foot.triangles])
    # Facing the target: the same winding on both screens (a flipped triangle shows the target its back).
    keep = verts.ok[tri].all(1) & (_signed_area(verts.src_uv[tri]) * _signed_area(verts.uv[tri]) > 0)
    tri = tri[keep]
    # Mesh triangles joined by the slope test's guess alone (they may bridge two surfaces).
    guess = torch.cat([~sure, torch.zeros(len(foot.triangles), dtype=torch.bool, device=device)])[keep]
    # A footprint stops short of its neighbours' positions: its far edge is open.
    is_footprint = (torch.arange(len(keep), device=device) >= len(triangles))[keep]
    return tri, guess, is_footprint


def _fragment_importance(frags: Fragments, z: torch.Tensor, valid: torch.Tensor, hw: int) -> torch.Tensor:
    """(F,) softmax weights ``exp(Z - 10)``, ``Z`` the fragments' inverse target depth normalised as the points'
    importance (over the valid points' ``z`` (B, N) of the batch element; ``hw`` target pixels per element)."""
    lo, hi = inverse_depth_bounds(z.float(), valid)
    fb = torch.div(frags.pixel, hw, rounding_mode="floor")
    importance = normalised_importance(frags.inv_depth, lo[fb, 0], hi[fb, 0]).clamp(-IMPORTANCE_RANGE, IMPORTANCE_RANGE)
    return torch.exp(importance - IMPORTANCE_RANGE)


def _fragment_values(
    frags: Fragments, verts: _Vertices, values: torch.Tensor, depth: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values (F, C), gap (F,))`` per fragment: the perspective-correct ``values`` (B, C, N), and the source-depth
    gap (world units) to the nearest sample it comes from (a triangle's corners, or the footprint's owner);
    ``depth`` (B, Hs, Ws) float32."""
    c = values.shape[1]
    owners = verts.owner[frags.corners]  # (F, 3) source pixels
    frag_values = (frags.weights[..., None] * values.float().permute(0, 2, 1).reshape(-1, c)[owners]).sum(1)
    frag_z = (frags.weights * verts.src_z[frags.corners]).sum(1)  # source depth is affine on the 3D triangle
    gap = (frag_z[:, None] - depth.reshape(-1)[owners]).abs().amin(1)
    return frag_values, gap


def _blend_fragments(
    frags: Fragments,
    e: torch.Tensor,
    frag_values: torch.Tensor,
    gap: torch.Tensor,
    guess: torch.Tensor,
    fallback: torch.Tensor,
    tolerance: float,
    shape: tuple[int, int, int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(values (B, C, H, W), depth_gap (B, H, W), covered (B, H, W) bool)``: the fragments' ``frag_values``
    (F, C) and source-depth ``gap`` (F,) averaged per target pixel with softmax weights ``e`` (F,); ``guess`` (M',)
    marks the slope-only triangles, ``fallback`` (F,) the receding wedges' fragments; ``shape`` is (B, H, W)."""
    b, height, width = shape
    hw = height * width
    c = frag_values.shape[1]
    device = e.device
    # A triangle the slope test alone joined may bridge two surfaces (a near and a far leg): its points that no
    # sample vouches for within ``tolerance`` cover nothing.
    e = torch.where(guess[frags.triangle] & (gap > tolerance), 0.0, e)
    # The source never sees past its silhouette: the wedge's mask rises to 1 at its far edge.
    gap = torch.where(fallback, 2.0 * gap, gap)
    # The receding wedges only fill pixels nothing else covers.
    den = torch.zeros(b * hw, device=device)
    den.index_add_(0, frags.pixel, torch.where(fallback, 0.0, e))
    e = torch.where(fallback & (den[frags.pixel] > 0), 0.0, e)
    num = torch.zeros(b * hw, c + 1, device=device)
    num.index_add_(0, frags.pixel, torch.cat([frag_values, gap[:, None]], 1) * e[:, None])
    den = torch.zeros(b * hw, device=device)
    den.index_add_(0, frags.pixel, e)
    covered = den > 0
    out = (num / torch.where(covered, den, torch.ones_like(den))[:, None]).view(b, height, width, c + 1)
    out = out.permute(0, 3, 1, 2)
    return out[:, :c], out[:, c], covered.view(b, height, width)


def mesh_warp(
    values: torch.Tensor,
    depth: torch.Tensor,
    uv: torch.Tensor,
    z: torch.Tensor,
    valid: torch.Tensor,
    K_src: torch.Tensor,
    c2w_src: torch.Tensor,
    K_tgt: torch.Tensor,
    c2w_tgt: torch.Tensor,
    height: int,
    width: int,
    max_grazing_deg: float = MAX_GRAZING_DEG,
    tolerance: float = SAME_SURFACE_TOLERANCE,
    alpha: torch.Tensor | None = None,
) -> MeshWarp:
    """Forward-warp the source as a triangle mesh plus silhouette footprints (see the module docstring).

    ``values`` (B, C, N) per source pixel, ``depth`` (B, Hs, Ws) the source depth (N = Hs * Ws), ``uv`` (B, N, 2)
    and ``z`` (B, N) the pixel centres' target positions and depths, ``valid`` (B, N) those that exist, ``alpha``
    (B, Hs, Ws) the source's coverage in [0, 1], which places its silhouette between pixels (optional).
    """
    b, _, n = values.shape
    max_slope = math.tan(math.radians(max_grazing_deg))
    depth = depth.float()
    Ks, Ts, Kt, Tt = K_src.float(), c2w_src.float(), K_tgt.float(), c2w_tgt.float()
    right, down = connected(depth, Ks, 0, 1, max_slope, tolerance), connected(depth, Ks, 1, 0, max_slope, tolerance)
    facing = pixel_facing(uv.float().view(b, *depth.shape[-2:], 2), right[0], down[0]).view(b, n)
    triangles, complete, sure = mesh_triangles(depth, Ks, right, down, max_slope, tolerance)
    foot = footprint_quadrants(depth, right[0], down[0], complete, tolerance, Ks, alpha)
    verts = _vertex_table(uv, z, valid, depth, foot, (Ks, Ts, Kt, Tt))
    tri, guess, is_footprint = _facing_triangles(verts, triangles, sure, foot)
    batch = torch.div(verts.owner[tri[:, 0]], n, rounding_mode="floor")
    frags = rasterize_triangles(verts.uv, verts.z, tri, batch, height, width, is_footprint)
    e = _fragment_importance(frags, z, valid, height * width)
    frag_values, gap = _fragment_values(frags, verts, values, depth)
    fallback = verts.wedge[frags.corners[:, 0]]
    blended = _blend_fragments(frags, e, frag_values, gap, guess, fallback, tolerance, (b, height, width))
    return MeshWarp(*blended, facing)


@dataclass
class Warp:
    """The forward-warped source in the target camera."""

    rgb: torch.Tensor  # (B, 3, H, W) warped colour (meaningful where covered)
    angle_deg: torch.Tensor  # (B, H, W) warped source/target ray angle
    covered: torch.Tensor  # (B, H, W) bool
    density: torch.Tensor  # (B, H, W) bilinear footprint mass of the points
    depth_gap: torch.Tensor  # (B, H, W) source depth from a mesh-covered pixel's point to its nearest sample


def warp_to_target(
    rgb: torch.Tensor,
    depth: torch.Tensor,
    K_src: torch.Tensor,
    c2w_src: torch.Tensor,
    K_tgt: torch.Tensor,
    c2w_tgt: torch.Tensor,
    height: int,
    width: int,
    cover: str = "mesh",
    max_grazing_deg: float = MAX_GRAZING_DEG,
    alpha: torch.Tensor | None = None,
) -> Warp:
    """Forward-warp the source pixels with depth > 0 into the target camera: as a mesh with footprints and points
    (``cover="mesh"``) or as points alone (``"points"``, the former partial view); see the module docstring.
    ``alpha`` (B, Hs, Ws), the source's coverage in [0, 1], places the silhouette between its pixels."""
    check_shape("rgb", rgb, (None, 3, None, None))
    b = rgb.shape[0]
    points = unproject(depth.float(), K_src.float(), c2w_src.float())
    valid = depth.reshape(b, -1) > 0
    uv, z = project(points, K_tgt.float(), c2w_tgt.float())
    valid = valid & (z > 1e-4) & torch.isfinite(uv).all(-1)
    angle = ray_angle_deg(points, c2w_src.float(), c2w_tgt.float())
    values = torch.cat([rgb.float().reshape(b, 3, -1), angle[:, None, :]], dim=1)
    depth_gap = torch.zeros(b, height, width, device=rgb.device)
    if cover == "mesh":
        mesh = mesh_warp(
            values, depth, uv, z, valid, K_src, c2w_src, K_tgt, c2w_tgt, height, width, max_grazing_deg, alpha=alpha
        )
        valid = valid & mesh.facing
    elif cover != "points":
        raise ValueError(f"cover must be 'mesh' or 'points'; got {cover!r}")
    # exp(Z - Zmax) reaches exp(-20) ~ 2e-9 for the farthest points: keep them with a denominator floor far below.
    importance = importance_from_depth(z, valid)
    out, density = softmax_splat(values, uv, importance, valid, height, width, eps=1e-30)
    covered = nearest_hits(uv, valid, height, width) > 0
    if cover == "mesh":
        out = torch.where(mesh.covered[:, None], mesh.values, out)
        depth_gap = torch.where(mesh.covered, mesh.depth_gap, depth_gap)
        covered = covered | mesh.covered
    return Warp(rgb=out[:, :3], angle_deg=out[:, 3], covered=covered, density=density[:, 0], depth_gap=depth_gap)


def _sphere_interval(origin: torch.Tensor, dirs: torch.Tensor, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry/exit ray parameters (B, N) of rays ``origin + t * dirs`` through the sphere at the origin."""
    b_coef = (origin[:, None, :] * dirs).sum(-1)
    c_coef = (origin * origin).sum(-1, keepdim=True) - radius * radius
    disc = b_coef * b_coef - c_coef
    root = torch.sqrt(disc.clamp_min(0.0))
    near = (-b_coef - root).clamp_min(0.0)
    far = -b_coef + root
    miss = (disc <= 0) | (far <= 0)
    return torch.where(miss, torch.zeros_like(near), near), torch.where(miss, torch.zeros_like(far), far)


def occlusion_region(
    depth_src: torch.Tensor,
    K_src: torch.Tensor,
    c2w_src: torch.Tensor,
    K_tgt: torch.Tensor,
    c2w_tgt: torch.Tensor,
    height: int,
    width: int,
    samples: int = 64,
    margin: float = 0.01,
    radius: float = BOUNDING_RADIUS,
    points_per_chunk: int = 1 << 21,
) -> torch.Tensor:
    """(B, H, W) bool: True where the target pixel is *not* proven empty by the source (the occlusion region).

    Only rays that cross the bounding sphere are sampled (the others are empty by construction), in chunks of
    at most ``points_per_chunk`` samples to bound memory.
    """
    b, hs, ws = depth_src.shape
    device = depth_src.device
    depth = depth_src.float()
    fg = (F.max_pool2d((depth > 0).float()[:, None], 3, stride=1, padding=1)[:, 0] > 0).reshape(-1)
    big = torch.full_like(depth, float("inf"))
    near_surface = (-F.max_pool2d(-torch.where(depth > 0, depth, big)[:, None], 3, stride=1, padding=1)).reshape(-1)
    Kt, Tt, Ks, Ts = K_tgt.float(), c2w_tgt.float(), K_src.float(), c2w_src.float()
    dirs = F.normalize(pixel_rays(Kt, height, width) @ Tt[:, :3, :3].transpose(1, 2), dim=-1)
    t0, t1 = _sphere_interval(Tt[:, :3, 3], dirs, radius)
    batch_of, pixel_of = torch.nonzero(t1 > t0, as_tuple=True)  # rays that cross the sphere
    unknown = torch.zeros(b, height * width, dtype=torch.bool, device=device)
    steps = (torch.arange(samples, device=device, dtype=torch.float32) + 0.5) / samples
    R_src, o_src = Ts[:, :3, :3], Ts[:, :3, 3]
    rays_per_chunk = max(1, points_per_chunk // samples)
    for start in range(0, len(batch_of), rays_per_chunk):
        bi, pi = batch_of[start : start + rays_per_chunk], pixel_of[start : start + rays_per_chunk]
        t = t0[bi, pi, None] + (t1 - t0)[bi, pi, None] * steps  # (n, S)
        pts = Tt[bi, None, :3, 3] + dirs[bi, pi, None, :] * t[..., None]  # (n, S, 3)
        cam = torch.einsum("nsk,nkj->nsj", pts - o_src[bi, None, :], R_src[bi])  # world -> source camera
        z = cam[..., 2]
        safe = torch.where(z > 1e-8, z, torch.ones_like(z))
        col = torch.floor(cam[..., 0] / safe * Ks[bi, 0, 0, None] + Ks[bi, 0, 2, None]).long()
        row = torch.floor(cam[..., 1] / safe * Ks[bi, 1, 1, None] + Ks[bi, 1, 2, None]).long()
        inside = (z > 1e-8) & (col >= 0) & (col < ws) & (row >= 0) & (row < hs)
        flat = (bi[:, None] * hs + row.clamp(0, hs - 1)) * ws + col.clamp(0, ws - 1)
        empty = inside & (~fg[flat] | (z < near_surface[flat] - margin))
        unknown[bi, pi] = ~empty.all(dim=1)
    return unknown.view(b, height, width)


def soft_mask(
    covered: torch.Tensor,
    angle_deg: torch.Tensor,
    region: torch.Tensor,
    half_angle_deg: float = 45.0,
    depth_gap: torch.Tensor | None = None,
    tolerance: float = SAME_SURFACE_TOLERANCE,
) -> torch.Tensor:
    """(B, H, W) float mask in [0, 1], 1 = generate: angle-based on covered pixels (raised to ``depth_gap / (2 *
    tolerance)`` where given), 1 in the uncovered occlusion region, 0 on known background."""
    angular = (angle_deg / (2.0 * half_angle_deg)).clamp(0.0, 1.0)
    if depth_gap is not None:
        angular = torch.maximum(angular, (depth_gap / (2.0 * tolerance)).clamp(0.0, 1.0))
    return torch.where(covered, angular, torch.where(region, torch.ones_like(angular), torch.zeros_like(angular)))


@dataclass
class PartialView:
    """Everything a training pair needs in the target camera (float tensors in [0, 1], bool masks)."""

    partial: torch.Tensor  # (B, 3, H, W) splatted colours where covered, white elsewhere
    mask: torch.Tensor  # (B, H, W) soft inpainting mask, 1 = generate
    visible: torch.Tensor  # (B, H, W) bool: covered by the splat
    region: torch.Tensor  # (B, H, W) bool: epipolar occlusion region (not proven empty)
    angle_deg: torch.Tensor  # (B, H, W)


def partial_view(
    rgb_src: torch.Tensor,
    depth_src: torch.Tensor,
    K_src: torch.Tensor,
    c2w_src: torch.Tensor,
    K_tgt: torch.Tensor,
    c2w_tgt: torch.Tensor,
    height: int,
    width: int,
    half_angle_deg: float = 45.0,
    region_samples: int = 64,
    cover: str = "mesh",
    alpha_src: torch.Tensor | None = None,
) -> PartialView:
    """Warp, cover, occlusion region and soft mask for a batch of (source, target) pairs; ``cover="points"`` is the
    former coverage by point hits alone (cracks where the target magnifies the source). ``alpha_src`` (B, Hs, Ws),
    the source's coverage in [0, 1], places its silhouette between pixels (without it, halfway)."""
    warp = warp_to_target(rgb_src, depth_src, K_src, c2w_src, K_tgt, c2w_tgt, height, width, cover, alpha=alpha_src)
    region = occlusion_region(depth_src, K_src, c2w_src, K_tgt, c2w_tgt, height, width, samples=region_samples)
    region = region | warp.covered
    mask = soft_mask(warp.covered, warp.angle_deg, region, half_angle_deg, warp.depth_gap)
    white = torch.ones_like(warp.rgb)
    partial = torch.where(warp.covered[:, None], warp.rgb.clamp(0.0, 1.0), white)
    return PartialView(partial=partial, mask=mask, visible=warp.covered, region=region, angle_deg=warp.angle_deg)
