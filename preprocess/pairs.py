"""Which (source, target) view pairs each object contributes: seeded per object, within an angle range."""

from __future__ import annotations

import numpy as np

from invs import cameras


def sample_pairs(
    c2w: list[np.ndarray],
    usable: list[bool],
    count: int,
    uid: str,
    seed: int,
    min_angle_deg: float,
    max_angle_deg: float,
) -> list[tuple[int, int]]:
    """Up to ``count`` ordered pairs (src, tgt) of usable, distinct views whose camera directions differ by an
    angle in [min, max] degrees; the choice is a pure function of (uid, seed), sorted for reproducible shards."""
    candidates = [
        (i, j)
        for i in range(len(c2w))
        for j in range(len(c2w))
        if i != j
        and usable[i]
        and usable[j]
        and min_angle_deg <= cameras.angle_between_views_deg(c2w[i], c2w[j]) <= max_angle_deg
    ]
    if len(candidates) <= count:
        return candidates
    rng = np.random.default_rng(cameras.object_seed(uid, seed))
    chosen = rng.choice(len(candidates), size=count, replace=False)
    return sorted(candidates[k] for k in chosen)
