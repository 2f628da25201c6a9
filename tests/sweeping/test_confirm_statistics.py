"""The confirm step's numbers against formulas worked out by hand, not against scipy: with 3 seeds (2 degrees of
freedom) Student's t has a closed form, F(t) = 1/2 + t / (2 sqrt(2 + t^2)), so the 95% quantile is
0.95 sqrt(2 / (1 - 0.95^2)) and a two-sided p is 1 - |t| / sqrt(2 + t^2)."""

from __future__ import annotations

import math
import statistics

import pytest

from narm_lightning.sweeping.confirm import DEFAULT_LABEL, summarize

T975_DF2 = 0.95 * math.sqrt(2 / (1 - 0.95**2))  # 4.302652...


def _p_two_sided_df2(t: float) -> float:
    return 1 - abs(t) / math.sqrt(2 + t * t)


def _results(default: list[float], best: list[float]) -> dict[tuple[str, int], dict[str, object]]:
    out: dict[tuple[str, int], dict[str, object]] = {}
    for label, values in ((DEFAULT_LABEL, default), ("trial 7", best)):
        for seed, value in zip((2020, 2021, 2022), values):
            out[(label, seed)] = {"params": {}, "metrics": {"mrr@10": value}}
    return out


def test_the_closed_forms_are_right() -> None:
    assert T975_DF2 == pytest.approx(4.303, abs=5e-4)  # the printed tables' value
    assert _p_two_sided_df2(T975_DF2) == pytest.approx(0.05, abs=1e-12)


def test_the_interval_is_the_95_percent_student_t_interval_of_the_mean() -> None:
    values = [0.0494, 0.0452, 0.0507]  # the README's best config
    row = next(r for r in summarize(_results([0.04, 0.045, 0.047], values), [DEFAULT_LABEL, "trial 7"])
               if r.label == "trial 7")
    mean = sum(values) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)  # sample std: n - 1
    half = T975_DF2 * sd / math.sqrt(3)
    assert (row.n, row.mean, row.std) == (3, pytest.approx(mean, abs=1e-15), pytest.approx(sd, abs=1e-15))
    assert (row.ci_low, row.ci_high) == (pytest.approx(mean - half, abs=1e-12), pytest.approx(mean + half, abs=1e-12))


def test_the_test_is_paired_over_the_seeds_and_two_sided() -> None:
    """Per-seed differences 0.010, 0.015, 0.010: t = mean(d) / (sd(d) / sqrt(3)) = 7, p = 1 - 7/sqrt(51) = 0.0198.
    The configs' spreads across seeds (0.1) dwarf that difference, so an unpaired test would say p ≈ 0.89: the
    two fall on opposite sides of 0.05."""
    default, best = [0.49, 0.585, 0.69], [0.50, 0.60, 0.70]
    row = next(r for r in summarize(_results(default, best), [DEFAULT_LABEL, "trial 7"]) if r.label == "trial 7")
    d = [b - a for a, b in zip(default, best)]
    t = statistics.fmean(d) / (statistics.stdev(d) / math.sqrt(3))
    assert t == pytest.approx(7.0, rel=1e-9)
    assert row.p_value == pytest.approx(_p_two_sided_df2(t), abs=1e-9)
    assert row.p_value < 0.05
    # the unpaired (Welch or pooled, equal n) t for the same numbers, by formula: far above 0.05
    pooled = math.sqrt((statistics.variance(default) + statistics.variance(best)) / 3)
    t_unpaired = (statistics.fmean(best) - statistics.fmean(default)) / pooled
    assert abs(t_unpaired) < 0.2  # df 4: p > 0.8
    assert (row.diff, row.n_paired) == (pytest.approx(statistics.fmean(d), abs=1e-15), 3)
    assert row.rel_diff == pytest.approx(statistics.fmean(d) / statistics.fmean(default), abs=1e-12)
    # swapping the sides flips the difference's sign, never the two-sided p
    flipped = next(r for r in summarize(_results(best, default), [DEFAULT_LABEL, "trial 7"]) if r.label == "trial 7")
    assert flipped.diff == pytest.approx(-row.diff) and flipped.p_value == pytest.approx(row.p_value, abs=1e-12)


def test_only_seeds_both_configs_ran_are_paired() -> None:
    results = _results([0.40, 0.50, 0.60], [0.41, 0.52, 0.61])
    del results[(DEFAULT_LABEL, 2022)]
    row = next(r for r in summarize(results, [DEFAULT_LABEL, "trial 7"]) if r.label == "trial 7")
    assert (row.n, row.n_paired) == (3, 2)
    assert row.diff == pytest.approx(0.015)
    # 2 pairs: differences 0.01, 0.02; t = 0.015 / (0.00707 / sqrt(2)) = 3, df 1: p = 1 - 2 atan(3) / pi
    assert row.p_value == pytest.approx(1 - 2 * math.atan(3) / math.pi, abs=1e-9)
