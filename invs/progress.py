"""Progress of a long job: a live bar on a terminal, a log line every ``interval_s`` seconds otherwise (cluster logs).

Both show the same numbers: ``done/total`` units, a free-form note (``"3 ok, 1 failed"``, ``"loss 0.41"``), the rate
and the ETA.
"""

from __future__ import annotations

import math
import sys
import time


class Progress:
    """``update(done, note)`` with the absolute number of units done; ``close()`` at the end.

    ``rate_per``: ``"s"`` or ``"h"``, the time unit of the rate shown in log lines (``12.5 steps/s``,
    ``980 objects/h``).
    """

    def __init__(
        self,
        desc: str,
        total: int,
        unit: str,
        rate_per: str = "s",
        interval_s: float = 10.0,
        start: int = 0,
    ) -> None:
        if rate_per not in ("s", "h"):
            raise ValueError(f"rate_per must be 's' or 'h', got {rate_per!r}")
        self.desc, self.total, self.unit, self.rate_per = desc, total, unit, rate_per
        self.interval_s = interval_s
        self.start = self.done = start
        self.note = ""
        self.started = time.monotonic()
        self._last_log = -math.inf  # the first update logs at once, however recently the machine booted
        self._bar = None
        if sys.stderr.isatty() and total:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=start, unit=unit.rstrip("s"), desc=desc, dynamic_ncols=True)

    def rate(self) -> float:
        """Units per second since this object was made (units done before it are not counted)."""
        elapsed = time.monotonic() - self.started
        return (self.done - self.start) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate()
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta_text = f"{eta / 60:.1f} min" if eta == eta else "?"
        shown = rate * 3600 if self.rate_per == "h" else rate
        note = f" ({self.note})" if self.note else ""
        return (
            f"{self.desc}: {self.done}/{self.total} {self.unit}{note}, {shown:.{0 if self.rate_per == 'h' else 2}f} "
            f"{self.unit}/{self.rate_per}, ETA {eta_text}"
        )

    def update(self, done: int, note: str = "") -> None:
        advanced = done - self.done
        self.done, self.note = done, note
        if self._bar is not None:
            self._bar.update(advanced)
            if note:
                self._bar.set_postfix_str(note)
        elif time.monotonic() - self._last_log >= self.interval_s or done >= self.total:
            self._last_log = time.monotonic()
            print(self.line(), flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
