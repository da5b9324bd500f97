"""Exponential backoff with jitter: the one retry policy of the project.

Used by the S3 operations of :mod:`invs.storage` (and the readers that retry under its policy) and, with its own
defaults, by the render stage's HTTP downloads. What counts as a transient error stays with each user; this is only
how many tries and how long to wait between them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; before try ``n + 1`` a wait of ``backoff_s * 2 ** (n - 1)`` seconds, at most
    ``max_wait_s`` (longer, up to that cap, if a server asks with ``retry_after``), times a random factor drawn
    uniformly from ``jitter``. The defaults are the S3 policy: 6 tries, 1 s doubled up to 30 s, +-25%."""

    attempts: int = 6
    backoff_s: float = 1.0
    max_wait_s: float = 30.0
    jitter: tuple[float, float] = field(default=(0.75, 1.25), repr=False)

    def wait_s(self, retry: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """The wait before retry number ``retry`` (1: the second try); ``rng`` defaults to the ``random`` module."""
        wait = min(self.max_wait_s, self.backoff_s * 2 ** (retry - 1))
        if retry_after is not None:
            wait = max(wait, min(self.max_wait_s, retry_after))
        low, high = self.jitter
        return wait * (rng or random).uniform(low, high)
