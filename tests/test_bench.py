from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import CONF_DIR, tiny_overrides


def test_bench_quick_runs_end_to_end_on_the_tiny_fixture(tiny_root, tmp_path) -> None:
    out = tmp_path / "out"
    overrides = [a for a in tiny_overrides(tiny_root) if not a.startswith("trainer.enable_progress_bar")]
    proc = subprocess.run(
        [sys.executable, str(CONF_DIR.parent / "bench" / "bench.py"), "--quick", "--epochs", "1", "--no-history",
         "--out", str(out), "--no-diginetica", "--variant", "plain=", "--variant", "bucket=data.bucket_batches=2",
         *overrides],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert set(report["speed"]) == {"plain", "bucket"}
    for r in report["speed"].values():
        assert r["epoch_median_s"] > 0 and r["floor_same_s"] > 0
        assert r["valid_bare_s"] > 0 and r["test_trainer_s"] > 0
    assert report["speed"]["bucket"]["floor_fp32_padded_s"] > 0
    assert report["peak_rss_mib"] > 0
    serving = report["serving"]
    assert serving["eager_recs_per_s_bs1"] > 0 and serving["torchscript_recs_per_s_bs256"] > 0
    assert "Serving (untrained ml-100k-sized NARM, top-20" in (out / "report.md").read_text()
    assert "| `bucket` |" in (out / "report.md").read_text()


def test_bench_reports_why_diginetica_was_skipped(tmp_path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(CONF_DIR.parent / "bench" / "bench.py"), "--quick", "--epochs", "1", "--no-history",
         "--out", str(out), "--accuracy-only", "--seeds", "0", "--no-serving", f"data.root={tmp_path}",
         "data.extra_roots=[]"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["diginetica"].startswith("skipped: ")  # the reader's own message: what is missing, where
    assert "train-item-views.csv" in report["diginetica"]


@pytest.mark.slow
def test_bench_quick_times_diginetica_training_and_evaluation(shared_data, tmp_path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(CONF_DIR.parent / "bench" / "bench.py"), "--quick", "--epochs", "1", "--no-history",
         "--out", str(out), "--accuracy-only", "--seeds", "0", "--no-serving", "trainer.enable_progress_bar=false",
         "logger=none"],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads((out / "report.json").read_text())["diginetica"]["default"]
    assert (row["n_train"], row["n_test"], row["n_items"]) == (647_523, 60_858, 43_098)
    assert row["epoch_estimate_s"] > 0 and row["batches_per_epoch"] == -(-647_523 // 2048)
    assert row["valid_s"] > 0 and row["test_peak_over_rss_mib"] is not None
    assert "DIGINETICA (`data=diginetica`" in (out / "report.md").read_text()
