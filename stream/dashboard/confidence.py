"""The confidence band drawn around a negative share: the Wilson score interval.

Why Wilson and not p ± z·sqrt(p(1-p)/n): a bucket with 2 negative posts out of 2 would get the band
[1, 1] from the normal approximation, which tells an analyst the share is certain when it rests on two
posts.  Wilson's interval stays inside [0, 1] and widens as the sample thins, which is what the band is
for: a spike on a thin bucket shows up as a wide band, not as a confident 100 %.
"""

from __future__ import annotations

import math

Z_95 = 1.959963984540054  # two-sided 95 %


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float] | None:
    """(low, high) of the share ``successes / trials``; None when there are no trials (no share at all)."""
    if trials <= 0:
        return None
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be within 0..trials, got {successes} of {trials}")
    p = successes / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denominator
    # Rounding can put an end a hair outside [0, 1] or beyond p at the extremes; clamp to what is true.
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))
