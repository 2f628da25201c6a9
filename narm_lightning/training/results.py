"""What a finished run reports: its figures as a table, the start line that says what runs, peak memory."""

from __future__ import annotations

import sys
from typing import Any

from omegaconf import DictConfig

from narm_lightning.training.precision import resolve_precision


def peak_rss_mib() -> float | None:
    """This process's peak resident memory so far, in MiB (rank 0's alone under DDP); None off Unix."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / 2**20 if sys.platform == "darwin" else peak / 1024, 1)  # bytes on macOS, KiB on Linux


def format_results(results: dict[str, Any], decimals: int = 4) -> str:
    """A readable table of best-valid and test metrics (and each extra test mode's) for the end of the console."""
    valid, test = results["best_valid"], results["test"]
    extra = results.get("extra_tests") or {}
    names = list(test) or list(valid)
    head = f"best valid (epoch {results['best_epoch']})" if valid else f"no valid (epoch {results['best_epoch']})"
    width = max(len(n) for n in names + ["metric"])
    columns = [f"{'metric':<{width}}  {head:>24}  {'test':>10}", *(f"{'test ' + m:>12}" for m in extra)]
    lines = ["  ".join(columns), "-" * (width + 38 + 14 * len(extra))]
    for name in names:
        shown = f"{valid[name]:.{decimals}f}" if name in valid else "-"
        cells = [f"{name:<{width}}  {shown:>24}  {test.get(name, float('nan')):>10.{decimals}f}",
                 *(f"{values.get(name, float('nan')):>12.{decimals}f}" for values in extra.values())]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def describe_run(cfg: DictConfig, stats: dict[str, Any], n_params: int) -> str:
    """One readable line: the dataset's size and the model's, as RecBole prints them at start (a click log's
    preprocessing before it: what was read and dropped)."""
    word = f"{stats.get('sequence_word', 'user')}s"
    users = f"{stats['n_users']:,} {word}, " if "n_users" in stats else ""
    read = ""
    if "preprocess" in stats:
        p = stats["preprocess"]
        read = (f"read {p['clicks']:,} clicks in {p['sessions']:,} {word} on {p['items']:,} items; dropped "
                f"{p['one_click_sessions']:,} {word} of one click and {p['rare_items']:,} items seen fewer than "
                f"{cfg.data.get('min_item_support', 5)} times; {p['train_sessions']:,} train / "
                f"{p['test_sessions']:,} test {word}. ")
    inter = f", {stats['n_interactions']:,} interactions" if "n_interactions" in stats else ""
    return (f"{cfg.data.dataset}: {read}{users}{stats['n_items']:,} items{inter}; examples train "
            f"{stats['n_train']:,} / valid {stats['n_valid']:,} / test {stats['n_test']:,}, mean history "
            f"{stats['avg_seq_len']:.1f}. "
            f"NARM: {n_params:,} parameters, precision {resolve_precision(cfg.trainer)}.")
