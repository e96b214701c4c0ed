"""bench/inference.py --interleave: systems are timed in turn, round after round, and ratios are taken
within a round (a slow spell of the shared machine then hits every system it overlaps, not one)."""

from __future__ import annotations

from bench.inference import System, fmt_ratio, interleave, round_ratios


def test_systems_run_in_turn_after_one_untimed_pass_each() -> None:
    calls: list[str] = []
    systems = [System(key, key, lambda key=key: calls.append(key), items=10) for key in "ABC"]
    systems[2].warmup = lambda: calls.append("c-warmup")
    interleave(systems, rounds=3)
    assert calls == ["A", "B", "c-warmup"] + ["A", "B", "C"] * 3
    assert all(len(s.seconds) == 3 and s.timings.items == 10 for s in systems)


def test_ratios_are_per_round_rates() -> None:
    fast = System("f", "f", lambda: None, items=20)
    slow = System("s", "s", lambda: None, items=10)
    fast.seconds, slow.seconds = [1.0, 2.0, 1.0], [2.0, 8.0, 1.0]  # round 2: a slow spell for both
    ratios = round_ratios(fast, slow)
    assert ratios == [4.0, 8.0, 2.0]  # (20/1)/(10/2), (20/2)/(10/8), (20/1)/(10/1)
    assert fmt_ratio(ratios) == "4.00x (rounds 2.00-8.00)"
