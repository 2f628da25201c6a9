from __future__ import annotations

import json
import os
import statistics
import subprocess

import pytest

from narm_lightning.training.run import train
from tests.helpers import REPO, bench_command, bench_script, compose_train, tiny_overrides


@pytest.mark.slow  # a whole benchmark in child processes: make test-slow (the default suite stays under 10 min)
def test_bench_quick_runs_end_to_end_on_the_tiny_fixture(tiny_root, tmp_path) -> None:
    out = tmp_path / "out"
    overrides = [a for a in tiny_overrides(tiny_root) if not a.startswith("trainer.enable_progress_bar")]
    proc = subprocess.run(
        [*bench_command("bench"), "--quick", "--epochs", "1", "--no-history",
         "--out", str(out), "--no-diginetica", "--no-clicks", "--variant", "plain=", "--variant",
         "bucket=data.bucket_batches=2", *overrides],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert set(report["speed"]) == {"plain", "bucket"}
    for r in report["speed"].values():
        assert r["epoch_median_s"] > 0 and r["floor_same_s"] > 0
        assert r["floor_matmul_s"] > 0  # reported (on tiny shapes it is call overhead, not a floor)
        assert r["valid_bare_s"] > 0 and r["test_trainer_s"] > 0
    assert report["speed"]["bucket"]["floor_fp32_padded_s"] > 0
    assert report["peak_rss_mib"] > 0
    serving = report["serving"]
    assert serving["eager_recs_per_s_bs1"] > 0 and serving["torchscript_recs_per_s_bs256"] > 0
    assert "Serving (untrained ml-100k-sized NARM, top-20" in (out / "report.md").read_text()
    assert "| `bucket` |" in (out / "report.md").read_text()
    throughput = report["throughput"]  # one worker with every core's thread vs one single-thread worker a core
    cores = os.cpu_count()
    assert set(throughput["layouts"]) == {f"1x{cores}", f"{cores}x1"} and throughput["faster"] in throughput["layouts"]
    for name, layout in throughput["layouts"].items():
        assert len(layout["steady_epoch_s"]) == layout["processes"] and layout["epochs_per_hour"] > 0, name
    assert "Sweep throughput" in (out / "report.md").read_text()


def test_bench_reports_why_diginetica_was_skipped(tmp_path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [*bench_command("bench"), "--quick", "--epochs", "1", "--no-history",
         "--out", str(out), "--accuracy-only", "--seeds", "0", "--no-serving", "--no-clicks", f"data.root={tmp_path}",
         "data.extra_roots=[]"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["diginetica"].startswith("skipped: ")  # the reader's own message: what is missing, where
    assert "train-item-views.csv" in report["diginetica"]


@pytest.mark.slow
def test_bench_quick_times_diginetica_training_and_evaluation(shared_data, tmp_path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [*bench_command("bench"), "--quick", "--epochs", "1", "--no-history",
         "--out", str(out), "--accuracy-only", "--seeds", "0", "--no-serving", "trainer.enable_progress_bar=false",
         "logger=none"],
        capture_output=True, text=True, timeout=900, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads((out / "report.json").read_text())["diginetica"]["default"]
    assert (row["n_train"], row["n_test"], row["n_items"]) == (647_523, 60_858, 43_098)
    assert row["epoch_estimate_s"] > 0 and row["batches_per_epoch"] == -(-647_523 // 2048)
    assert row["valid_s"] > 0 and row["test_peak_over_rss_mib"] is not None
    assert "DIGINETICA (`data=diginetica`" in (out / "report.md").read_text()


def test_collect_summarises_seed_runs_from_several_folders(tmp_path) -> None:
    def result(folder: str, variant: str, seed: int, mrr: float) -> None:
        path = tmp_path / folder / "accuracy" / variant / f"seed{seed}" / "results.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"test": {"mrr@10": mrr, "ndcg@10": 2 * mrr, "recall@10": 3 * mrr},
                                    "best_epoch": seed - 2000, "epochs_run": 30, "fit_seconds": 1.0}))

    result("a", "base", 2020, 0.04)
    result("b", "base", 2021, 0.06)
    result("b", "fast", 2021, 0.05)
    (tmp_path / "b" / "accuracy" / "fast" / "seed2022").mkdir()  # unfinished: no results.json, left out
    out = tmp_path / "out"
    proc = subprocess.run(
        [*bench_command("bench"), "--collect", str(tmp_path / "a"),
         str(tmp_path / "b"), "--no-history", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    acc = json.loads((out / "report.json").read_text())["accuracy"]
    assert [r["seed"] for r in acc["base"]["runs"]] == [2020, 2021]
    assert acc["base"]["mrr@10"]["mean"] == pytest.approx(0.05)
    assert acc["base"]["recall@10"]["std"] == pytest.approx(3 * 0.0141421356, rel=1e-6)
    assert len(acc["fast"]["runs"]) == 1 and acc["fast"]["mrr@10"]["std"] == 0.0
    assert "| `base` | 2 | 0.0500 ± 0.0141 |" in (out / "report.md").read_text()


def test_session_table_from_finished_train_runs(tiny_root, tmp_path) -> None:
    run = tmp_path / "run"
    results = train(compose_train(tiny_overrides(tiny_root, "epochs=2", "topk=[10,20]")), output_dir=run)
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("dataset: tiny",
                                                                                "dataset: diginetica"))
    out = tmp_path / "out"
    proc = subprocess.run(bench_command("bench_sessions", "--collect", str(run), "--out", str(out)),
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads((out / "sessions.json").read_text())["rows"][0]
    assert row["dataset"] == "diginetica" and row["epochs"] == 2 and row["refit"] is False
    assert row["recall@20"] == pytest.approx(100 * results["test"]["recall@20"])
    assert row["seconds_per_epoch"] == results["seconds_per_epoch"] and row["peak_rss_mib"] > 0
    table = (out / "sessions.md").read_text()
    assert f"| {row['recall@20']:.2f} | {row['mrr@20']:.2f} | {row['seconds_per_epoch']:.1f} |" in table
    assert "| diginetica | Ludewig et al. 2019, sorted data | 30 | | 49.79 | 15.85 | | |" in table

    (run / "results.json").unlink()  # an unfinished run: one clear line, no table written over the old one
    before = table
    proc = subprocess.run(bench_command("bench_sessions", "--collect", str(run), "--out", str(out)),
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 1 and "results.json not found" in proc.stderr and "Traceback" not in proc.stderr
    assert (out / "sessions.md").read_text() == before


def test_session_table_marks_a_refit_without_validation(tmp_path) -> None:
    """A ``data.valid_ratio=0`` run tested its last epoch: the table says so instead of 'best epoch'."""
    bench_sessions = bench_script("bench_sessions")
    results = {"epochs_run": 23, "best_epoch": 22, "model_selection": "last epoch (data.valid_ratio=0)",
               "test": {"recall@20": 0.5, "mrr@20": 0.16}, "seconds_per_epoch": 200.0, "peak_rss_mib": 1500.0,
               "precision": "bf16-mixed"}
    row = bench_sessions.row_from("diginetica", results, source="x", seed=None)
    assert row["refit"] is True
    table = bench_sessions.write_tables([row], tmp_path)
    assert "| 23 | 22 (last; all training examples, no valid) | 50.00 | 16.00 | 200.0 | 1500 |" in table


def test_session_table_groups_seeds_of_one_dataset_above_its_published_rows(tmp_path) -> None:
    bench_sessions = bench_script("bench_sessions")

    def results(recall: float) -> dict:
        return {"epochs_run": 30, "best_epoch": 20, "test": {"recall@20": recall, "mrr@20": 0.16},
                "seconds_per_epoch": 200.0, "peak_rss_mib": 1500.0, "precision": "bf16-mixed"}

    rows = [bench_sessions.row_from("diginetica", results(0.49), "a", seed=1),
            bench_sessions.row_from("yoochoose1_64", results(0.69), "b", seed=1),
            bench_sessions.row_from("diginetica", results(0.50), "c", seed=2)]
    lines = bench_sessions.write_tables(rows, tmp_path).splitlines()[4:]
    assert [line.split(" | ")[1] for line in lines] == [
        "narm-lightning (bf16-mixed, seed 1)", "narm-lightning (bf16-mixed, seed 2)",
        "NARM paper, unsorted data (Li et al. 2017)", "SR-GNN final version, sorted data (Wu et al. 2019)",
        "Ludewig et al. 2019, sorted data", "narm-lightning (bf16-mixed, seed 1)", "NARM paper (Li et al. 2017)"]
    assert lines[1].startswith("| diginetica |") and lines[-1].startswith("| yoochoose1_64 |")




def test_hugepage_bench_sets_only_the_hugetlb_tunable_per_child() -> None:
    """'without' must strip the tunable the Makefile exports; both settings keep the user's other tunables."""
    hp = bench_script("bench_hugepages")
    env = {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1:glibc.malloc.arena_max=2"}
    assert hp.child_env("without", env) == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    assert hp.child_env("with", env)["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert "GLIBC_TUNABLES" not in hp.child_env("without", {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})
    assert hp.child_env("with", {})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"


@pytest.mark.slow  # a whole benchmark in child processes: make test-slow (the default suite stays under 10 min)
def test_hugepage_bench_times_both_settings_in_separate_processes(tmp_path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [*bench_command("bench_hugepages"), "--steps", "3", "--warmup", "1",
         "--rounds", "1", "--n-items", "4000", "--batch", "64", "--threads", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
        env={**os.environ, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "hugepages.json").read_text())
    without, with_ = report["settings"]["without"], report["settings"]["with"]
    assert without["glibc_tunables"] == "" and with_["glibc_tunables"] == "glibc.malloc.hugetlb=1"
    assert without["median_ms"] > 0 and with_["median_ms"] > 0
    assert report["speedup"] == pytest.approx(without["median_ms"] / with_["median_ms"])
    assert "| `(unset)` |" in (out / "hugepages.md").read_text()
    # the fault counts are measured and reported; whether huge pages cut them depends on the host's free huge
    # pages at that moment (a measurement for the report, not a behaviour to assert)
    assert without["minor_faults_per_step"] >= 0 and with_["minor_faults_per_step"] >= 0


@pytest.mark.slow  # a whole benchmark in child processes: make test-slow (the default suite stays under 10 min)
def test_bench_recbole_alternates_processes_and_reports_every_epoch(tiny_root, tmp_path) -> None:
    """Our two systems on the tiny fixture (RecBole's venv is not part of the test suite): processes alternate
    round by round, each started as users start it (``train.py``, none of our environment variables), every
    epoch is reported, and the table says which precision each ran; the compared figure is each process's mean
    epoch, its first included."""
    out = tmp_path / "out"
    overrides = [a for a in tiny_overrides(tiny_root) if not a.startswith(("trainer.enable_progress_bar", "logger"))]
    env = {**os.environ, "GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1", "NARM_KEEP_ENV": "1"}
    proc = subprocess.run(
        [*bench_command("bench_recbole"), "--systems", "ours-default,ours-exact",
         "--rounds", "2", "--no-history", "--out", str(out), *overrides, "logger=none"],
        capture_output=True, text=True, timeout=600, env=env, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("round ")]
    assert [line.split()[2] for line in lines] == ["ours-default", "ours-exact"] * 2
    report = json.loads((out / "recbole.json").read_text())
    assert report["systems"]["ours-exact"]["runs"][0]["precision"] == "32-true" and report["cpu"]
    assert all(len(s["runs"]) == 2 and s["median_epoch_s"] > 0 for s in report["systems"].values())
    for system in report["systems"].values():  # three epochs a process: the mean compared, first and steady beside
        assert all(len(run["epoch_s"]) == 3 for run in system["runs"])
        assert all(a <= b for run in system["runs"] for a, b in zip(run["epoch_s"], run["epoch_with_valid_s"]))
        assert system["mean_epoch_s"] == statistics.median(statistics.fmean(r["epoch_s"]) for r in system["runs"])
        assert system["median_epoch_s"] == statistics.median(x for run in system["runs"] for x in run["epoch_s"][1:])
        assert system["median_first_epoch_s"] == statistics.median(run["epoch_s"][0] for run in system["runs"])
    assert "| `ours-exact` (32-true) |" in (out / "recbole.md").read_text()
    assert "`glibc.malloc.trim_threshold=1`, removed" in (out / "recbole.md").read_text()
    from narm_lightning.training.hostcheck import RECOMMENDED_TUNABLES

    for system in report["systems"].values():  # the caller's setting never reached ours; its own did
        assert all(run["glibc_tunables"] == ":".join(RECOMMENDED_TUNABLES) for run in system["runs"])


@pytest.mark.slow  # a whole benchmark in child processes: make test-slow (the default suite stays under 10 min)
def test_the_click_log_bench_makes_its_log_and_measures_each_step(tmp_path) -> None:
    """bench_clicks.py: the generated log has the clicks and sessions asked for, and the report carries what the
    load path returned (the examples) beside the measured seconds and memory."""
    log, out = tmp_path / "clicks.csv", tmp_path / "clicks.json"
    proc = subprocess.run([*bench_command("bench_clicks"), "--clicks", "40000", "--log",
                           str(log), "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = log.read_text().splitlines()
    assert lines[0] == "session_id,item_id,timestamp" and len(lines) == 40_001
    assert len({line.split(",")[0] for line in lines[1:]}) == 40_000 * 28 // 100
    report = json.loads(out.read_text())
    assert report["preprocess"]["clicks"] == 40_000 and report["preprocess"]["sessions"] == 11_200
    examples = report["examples"]
    assert examples["train"] + examples["valid"] > examples["test"] > 0
    assert report["first"]["seconds"] > 0 and report["first"]["peak_rss_mib"] > 0
    assert report["cached"]["peak_rss_mib"] > 0 and report["train_20_batches"]["rss_mib_batch_20"] > 0


def _recbole_report(kind: str, ours_mean: float, **changes: object) -> dict:
    """A bench_recbole report as main() writes it (the figures made up: the table's arithmetic is under test)."""
    def system(mean: float, steady: float, first: float) -> dict:
        return {"mean_epoch_s": mean, "median_epoch_s": steady, "median_first_epoch_s": first, "runs": []}

    return {"cpu_kind": kind, "date": "2026-12-08 04:00 UTC", "git": "abc1234", "cpu": "Some CPU", "cores": 2,
            "bf16_flags": ["avx512f", "avx512_bf16"], "load_before": "0.5", "load_after": "1.9", "epochs": 3,
            "overrides": [], "systems": {"recbole": system(70.0, 68.0, 74.0),
                                         "ours-default": system(ours_mean, 10.0, 14.0)}, **changes}


def test_the_history_keeps_one_side_by_side_row_per_host_kind() -> None:
    """A run of the issue's measure replaces its own host kind's row and keeps the other kinds'; the table is made
    before the first dated entry when the history has none; a run that is not the measure (no RecBole, fewer than 3
    epochs, overrides) gives no row."""
    recbole = bench_script("bench_recbole")
    history = "# Benchmark history\n\nintro\n\n### 2026-11-28 entry\n\ntext\n"
    amd, intel = "AMD family 25 model 17, AVX512-BF16, no AMX", "Intel family 6 model 167, AMX"
    row = recbole.host_kind_row(_recbole_report(amd, 11.0))
    assert row.startswith(f"| {amd} | 2026-12-08 04:00 UTC, abc1234 |") and "avx512f avx512_bf16" in row
    assert "| 70.0 / 68.0 / 74.0 | 11.0 / 10.0 / 14.0 | **6.36x** (6.80x) | 1.40x |" in row
    once = recbole.with_host_kind_row(history, amd, row)
    assert once.index("intro") < once.index(recbole.HOST_KINDS_START) < once.index("### 2026-11-28 entry")
    both = recbole.with_host_kind_row(once, intel, recbole.host_kind_row(_recbole_report(intel, 10.0)))
    again = recbole.with_host_kind_row(both, amd, recbole.host_kind_row(_recbole_report(amd, 14.0)))
    table = again.split(recbole.HOST_KINDS_START)[1].split(recbole.HOST_KINDS_END)[0].strip().splitlines()
    assert [line.split("|")[1].strip() for line in table[2:]] == [amd, intel]  # replaced in place, one row a kind
    assert "| 14.0 / 10.0 / 14.0 |" in table[2] and "| 10.0 / 10.0 / 14.0 |" in table[3]
    assert again.endswith("### 2026-11-28 entry\n\ntext\n") and again.count("intro") == 1
    for not_the_measure in ({"epochs": 2}, {"overrides": ["model.hidden_size=16"]}):
        assert recbole.host_kind_row(_recbole_report(amd, 11.0, **not_the_measure)) is None
    alone = _recbole_report(amd, 11.0)
    del alone["systems"]["recbole"]
    assert recbole.host_kind_row(alone) is None


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a host without a CUDA device")
def test_the_gpu_check_on_a_host_without_a_gpu_says_so_in_one_paragraph(tmp_path) -> None:
    """``make bench-gpu`` where no GPU is: the config's own one-paragraph refusal, exit 2, no traceback, no report."""
    proc = subprocess.run([*bench_command("bench"), "--quick", "--epochs", "1", "--no-history", "--no-serving",
                           "--out", str(tmp_path / "out"), "--variant", "gpu-bf16=trainer=gpu"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "error: Invalid config: trainer.accelerator is 'gpu' but this machine has no CUDA device" in proc.stderr
    assert not (tmp_path / "out" / "report.json").exists()
