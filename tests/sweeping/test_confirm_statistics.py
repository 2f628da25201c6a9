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


def _rows(results: dict, labels: list[str]) -> dict[tuple[str, str], object]:
    return {(r.label, r.metric): r for r in summarize(results, labels)}


def test_one_seed_has_a_mean_but_no_spread_interval_or_test() -> None:
    """A config with one seed so far (the confirm step mid-way): its mean, and NaN / None where a spread is needed."""
    results = {(DEFAULT_LABEL, 2020): {"metrics": {"mrr@10": 0.04}}, ("trial 7", 2020): {"metrics": {"mrr@10": 0.05}}}
    rows = _rows(results, [DEFAULT_LABEL, "trial 7"])
    best = rows[("trial 7", "mrr@10")]
    assert (best.n, best.mean, best.n_paired) == (1, 0.05, 1)
    assert math.isnan(best.std) and math.isnan(best.ci_low) and math.isnan(best.ci_high)
    assert best.diff == pytest.approx(0.01) and best.rel_diff == pytest.approx(0.25) and best.p_value is None


def test_two_seeds_have_a_spread_and_the_default_is_compared_with_nothing() -> None:
    results = {(label, seed): {"metrics": {"mrr@10": v}} for label, vals in
               ((DEFAULT_LABEL, (0.04, 0.05)), ("trial 7", (0.06, 0.08))) for seed, v in zip((2020, 2021), vals)}
    rows = _rows(results, [DEFAULT_LABEL, "trial 7"])
    best, default = rows[("trial 7", "mrr@10")], rows[(DEFAULT_LABEL, "mrr@10")]
    assert best.std == pytest.approx(0.02 / math.sqrt(2))  # two values 0.02 apart
    t975_df1 = math.tan(math.pi * (0.975 - 0.5))  # Student's t with 1 degree of freedom is Cauchy
    assert best.ci_high - best.mean == pytest.approx(t975_df1 * best.std / math.sqrt(2))
    # the default itself: no difference to itself, no test, no pairs
    assert (default.diff, default.rel_diff, default.p_value, default.n_paired) == (None, None, None, 0)
    # paired differences 0.02 and 0.03: t = 0.025 / (0.00707 / sqrt 2) = 5, df 1: p = 1 - 2 atan(5) / pi
    assert best.p_value == pytest.approx(1 - 2 * math.atan(5) / math.pi, abs=1e-9)


def test_identical_differences_have_no_p_value_and_a_zero_default_no_relative_difference() -> None:
    """The same gain on every seed: the t statistic is undefined (not p = 0). A default of 0: no relative gain."""
    # binary fractions: the differences are exactly equal (0.0625 each), not equal up to rounding
    results = {(label, seed): {"metrics": {"mrr@10": v + (0.0625 if label != DEFAULT_LABEL else 0), "zero": 0.0
                                           if label == DEFAULT_LABEL else 0.1}}
               for label in (DEFAULT_LABEL, "trial 7") for seed, v in zip((2020, 2021, 2022), (0.25, 0.5, 0.75))}
    rows = _rows(results, [DEFAULT_LABEL, "trial 7"])
    same = rows[("trial 7", "mrr@10")]
    assert same.diff == 0.0625 and same.n_paired == 3 and same.p_value is None
    zero = rows[("trial 7", "zero")]
    assert zero.diff == pytest.approx(0.1) and zero.rel_diff is None


def test_a_metric_or_a_config_without_results_is_left_out_and_the_rest_kept() -> None:
    """A config that has no finished seed yet gives no row; a metric one config lacks gives no row for it, and
    the next metric of that config is still there."""
    results = {(DEFAULT_LABEL, 2020): {"metrics": {"a": 0.1, "b": 0.2}}, ("trial 7", 2020): {"metrics": {"b": 0.3}},
               ("trial 9", 2020): {"error": "crashed"}}
    rows = _rows(results, [DEFAULT_LABEL, "trial 7", "trial 9"])
    assert sorted(rows) == [(DEFAULT_LABEL, "a"), (DEFAULT_LABEL, "b"), ("trial 7", "b")]
    assert all(metric == row.metric for (_, metric), row in rows.items())
    assert summarize(results, ["trial 8"]) == []


def _two_rows() -> list:
    from narm_lightning.sweeping.confirm import Row

    return [Row(DEFAULT_LABEL, "mrr@10", 3, 0.0437, 0.0024, 0.0377, 0.0497, None, None, None, 0),
            Row("trial 25", "mrr@10", 1, 0.05, float("nan"), float("nan"), float("nan"), 0.0047, 0.1075, 0.183, 3)]


def test_the_confirm_csv_is_every_field_of_every_row() -> None:
    from narm_lightning.sweeping.confirm import to_csv

    params = {"trial 25": {"n_layers": "2", "learning_rate": 0.005}}
    assert to_csv(_two_rows(), params).splitlines() == [
        "config,params,metric,n,mean,std,ci95_low,ci95_high,diff_vs_default,rel_diff_vs_default,p_value_paired,n_paired",
        "default,{},mrr@10,3,0.0437,0.0024,0.0377,0.0497,,,,0",
        'trial 25,"{""learning_rate"": 0.005, ""n_layers"": ""2""}",mrr@10,1,0.05,nan,nan,nan,0.0047,0.1075,0.183,3',
    ]


def test_the_confirm_table_reads_as_the_readme_shows_it() -> None:
    from narm_lightning.sweeping.confirm import Row, to_markdown

    params = {"trial 25": {"learning_rate": 0.005, "n_layers": "2"}}
    rows = [*_two_rows(), Row("trial 3", "zero", 2, 0.1, 0.0, 0.1, 0.1, 0.1, None, None, 2)]  # a default of 0
    assert to_markdown(rows, params, [2020, 2021, 2022]).splitlines() == [
        "Seeds 2020, 2021, 2022; mean ± sample std, 95% Student-t interval of the mean; paired t-test against the "
        "default config over the same seeds (two-sided).",
        "",
        "| config | params | metric | n | mean ± std | 95% CI | vs default | p (paired) |",
        "|---|---|---|---|---|---|---|---|",
        "| default | (defaults) | mrr@10 | 3 | 0.0437 ± 0.0024 | [0.0377, 0.0497] |  |  |",
        "| trial 25 | learning_rate=0.005, n_layers=2 | mrr@10 | 1 | 0.0500 | - | +0.0047 (+10.8%) | 0.183 |",
        "| trial 3 | (defaults) | zero | 2 | 0.1000 ± 0.0000 | [0.1000, 0.1000] | +0.1000 |  |",
    ]


def test_the_configs_to_confirm_are_the_best_distinct_ones_in_the_studys_direction() -> None:
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from narm_lightning.sweeping.confirm import Candidate, candidates

    dists = {"lr": FloatDistribution(0.0, 1.0), "layers": CategoricalDistribution(["1", "2"])}
    for direction, best_first in (("maximize", [0.9, 0.5, 0.3]), ("minimize", [0.1, 0.3, 0.5])):
        study = optuna.create_study(direction=direction)
        for value, params in ((0.5, {"lr": 0.5, "layers": "1"}), (0.9, {"lr": 0.9, "layers": "2"}),
                              (0.1, {"lr": 0.1, "layers": "1"}), (0.7, {"layers": "2", "lr": 0.9}),  # a repeat
                              (0.3, {"lr": 0.3, "layers": "2"})):
            study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=value))
        study.add_trial(optuna.trial.create_trial(params={"lr": 0.2, "layers": "1"}, distributions=dists,
                                                  state=optuna.trial.TrialState.FAIL))
        chosen = candidates(study, top=3, baseline=True)
        assert chosen[0] == Candidate(DEFAULT_LABEL, {})
        assert [c.params["lr"] for c in chosen[1:]] == best_first, direction
        assert len({tuple(sorted(c.params.items())) for c in chosen[1:]}) == 3  # the repeat counted once
        assert [c.label for c in candidates(study, top=1, baseline=False)] == [chosen[1].label]


def test_a_jobs_metrics_are_its_numbers_and_a_bad_return_says_so() -> None:
    from narm_lightning.sweeping.confirm import job_metrics

    returned = {"objective": 0.1, "results": {"test": {"mrr@10": 0.05, "n": 3, "ok": True, "name": "x"}}}
    assert job_metrics(returned, "test") == {"mrr@10": 0.05, "n": 3.0}
    for value in (0.5, [1, 2], {"results": [1]}, {"results": {"test": [1]}}, {"results": {"other": {}}}):
        with pytest.raises(ValueError, match=r"the task returned no mapping of metrics under results\.test"):
            job_metrics(value, "test")
