"""What the benchmark scripts share: order statistics and plain-text tables."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = ["quantile", "status_line", "summary", "text_table"]


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile of already sorted values."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles and a distribution-free ~95% confidence interval of the median
    (order statistics n/2 -+ 0.98 sqrt(n)). With few values the interval is wide, and
    below 6 values it is the whole range."""
    s = sorted(values)
    n = len(s)
    half = 0.98 * math.sqrt(n)
    lo_i = max(0, math.floor(n / 2 - half))
    hi_i = min(n - 1, math.ceil(n / 2 + half) - 1)
    return {
        "n": n,
        "median": statistics.median(s) if s else math.nan,
        "p25": quantile(s, 0.25),
        "p75": quantile(s, 0.75),
        "min": s[0] if s else math.nan,
        "max": s[-1] if s else math.nan,
        "ci95_lo": s[lo_i] if n else math.nan,
        "ci95_hi": s[hi_i] if n else math.nan,
    }


def text_table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    """Columns as wide as their widest cell; the columns in `right` right-aligned."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return [line(headers), rule, *(line(r) for r in rows)]


def status_line(rows: Sequence[dict[str, object]]) -> str:
    """The closing line of a results table: how many targeted rows (status PASS or MISS)
    pass, and which miss."""
    targeted = [r for r in rows if r["status"] in ("PASS", "MISS")]
    missed = [str(r["id"]) for r in targeted if r["status"] == "MISS"]
    return f"{len(targeted) - len(missed)}/{len(targeted)} targeted rows PASS" + (
        f"; MISS: {', '.join(missed)}" if missed else ""
    )
