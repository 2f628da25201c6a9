"""Where a persistent sweep study stands, as a Markdown table: every trial's params, state, value, epochs
reported and wall time, then the totals (trials/hour) and the confirm step's table if it has run.

    python bench/study_status.py [--study hyper-test-ml-100k] [--storage sqlite:///optuna/<study>.db]

Read-only: it opens the storage, never a trial. ``make study-hyper-test-status`` prints issue 20's study.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import optuna

    from narm_lightning.sweeping.confirm import candidates, stored, summarize, to_markdown
    from narm_lightning.sweeping.study import stale_trial_numbers

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default="hyper-test-ml-100k")
    parser.add_argument("--storage", default=None, help="default: sqlite:///optuna/<study>.db")
    parser.add_argument("--confirm-top", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=args.study, storage=args.storage or f"sqlite:///optuna/{args.study}.db")
    trials = study.get_trials(deepcopy=False)
    names = list(dict.fromkeys(name for t in trials for name in t.params))
    print(f"Study {args.study}: {len(trials)} trials\n")
    print("| # | " + " | ".join(names) + " | state | value | epochs | minutes |")
    print("|---|" + "---|" * (len(names) + 4))
    seconds = 0.0
    stale = stale_trial_numbers(trials)  # stopped or orphaned, run again as another trial: not counted
    for t in trials:
        minutes = (t.datetime_complete - t.datetime_start).total_seconds() / 60 if t.datetime_complete else None
        seconds += (minutes or 0) * 60 if t.number not in stale else 0
        value = f"{t.value:.4f}" if t.value is not None else (
            f"{list(t.intermediate_values.values())[-1]:.4f} (last)" if t.intermediate_values else "")
        state = f"{t.state.name} (stopped; run again)" if t.number in stale else t.state.name
        print(f"| {t.number} | " + " | ".join(str(t.params.get(n, "")) for n in names)
              + f" | {state} | {value} | {len(t.intermediate_values)} | "
              + (f"{minutes:.1f}" if minutes is not None else "") + " |")
    done = [t for t in trials if t.state.is_finished() and t.number not in stale]
    if seconds:
        print(f"\n{len(done)} finished in {seconds / 3600:.2f} h of trial time: {len(done) / (seconds / 3600):.2f} "
              "trials/hour")
    results = stored(study)
    if results:
        chosen = candidates(study, args.confirm_top, True)
        seeds = sorted({seed for _, seed in results})
        print("\nConfirm step:\n")
        print(to_markdown(summarize(results, [c.label for c in chosen]), {c.label: c.params for c in chosen}, seeds))


if __name__ == "__main__":
    main()
