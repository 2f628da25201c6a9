"""The confirm step, after a study: its best configs and the default config retrained over several seeds, each
result stored in the study as it ends (a rerun resumes, a stopped run continues), then the table with its
statistics (``confirm.py``) on the console and in the study's folder.

``ConfirmStep`` is the sweeper's part that runs it (mixed into ``OptunaSweeperImpl``: it launches through the
same jobs, ``jobs.TrialJobs``)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from narm_lightning.errors import RunInterrupted
from narm_lightning.sweeping.jobs import TrialJobs, identity_overrides, quoted
from narm_lightning.sweeping.space import SearchSpace, params_to_overrides
from narm_lightning.sweeping.study import continuable
from narm_lightning.sweeping.trials import MAX_ERROR_CHARS, as_minutes, job_value, jsonable, refused_resume

log = logging.getLogger("narm_lightning.sweeping.sweeper")  # the sweeper's console lines, one logger
CONFIRM_STEP_LINE = "Confirm step: "


class ConfirmStep(TrialJobs):
    """Retrain the top ``confirm_top`` configs and the default over ``confirm_seeds`` seeds; report the table."""

    confirm_top: int
    confirm_seeds: int
    confirm_baseline: bool
    results_key: str
    n_jobs: int

    def _confirm_plan(self, study: Any) -> tuple[list[Any], list[int]]:
        from narm_lightning.sweeping.confirm import candidates

        return candidates(study, self.confirm_top, self.confirm_baseline), self._seeds(self.confirm_seeds)

    def _confirm_jobs_left(self, study: Any) -> int:
        from narm_lightning.sweeping.confirm import stored

        if not self.confirm_top:
            return 0
        chosen, seeds = self._confirm_plan(study)
        done = stored(study)
        return sum((c.label, s) not in done for c in chosen for s in seeds)

    def _confirm(self, study: Any, space: SearchSpace, storage_url: str, study_name: str, sweep_dir: Path
                 ) -> list[dict[str, Any]]:
        """Retrain the top configs and the default over ``confirm_seeds`` seeds, each result stored in the
        study as it ends (a rerun resumes), then the table: sweep folder, console; returned for the report hooks
        (W&B)."""
        from narm_lightning.sweeping.confirm import attr_key, job_metrics, stopped_key, stored

        chosen, seeds = self._confirm_plan(study)
        done = stored(study)
        jobs = [(c, s) for c in chosen for s in seeds if (c.label, s) not in done]
        if jobs:
            log.info(CONFIRM_STEP_LINE + "%d configs (%s) x %d seeds; %d runs left.", len(chosen),
                     ", ".join(c.label for c in chosen), len(seeds), len(jobs))
        started = time.monotonic()
        for start in range(0, len(jobs), self.n_jobs):
            chunk = jobs[start : start + self.n_jobs]
            folders = [self._stopped_confirm_run(study, stopped_key(c.label, seed)) for c, seed in chunk]
            batch = [[*space.fixed_overrides, *params_to_overrides(c.params, self._config_groups(c.params)),
                      f"{self.seed_key}={seed}", *identity_overrides(storage_url, study_name, 0)[:2],
                      *([f"{self.resume_key}={quoted(str(folder))}"] if folder else [])]
                     for (c, seed), folder in zip(chunk, folders)]
            for (c, seed), folder in zip(chunk, folders):
                if folder:
                    log.info("Confirm %s seed %d continues its stopped run from its last checkpoint: %s",
                             c.label, seed, folder)
            try:
                returns = self._launch(batch)
            except RunInterrupted as exc:  # one job at a time: the stopped run is that job's, continued next time
                if len(chunk) == 1 and exc.run_dir is not None and self.resume_key:
                    study.set_user_attr(stopped_key(chunk[0][0].label, chunk[0][1]), str(exc.run_dir))
                    log.warning("Confirm %s seed %d stopped: the rerun of this command continues it from its last "
                                "finished epoch.", chunk[0][0].label, chunk[0][1])
                raise
            returns = list(returns)
            for i, folder in enumerate(folders):
                if folder and refused_resume(returns[i]) is not None:  # the run cannot go on: start it over
                    log.warning("Confirm %s seed %d could not continue its stopped run: it starts over.",
                                chunk[i][0].label, chunk[i][1])
                    study.set_user_attr(stopped_key(chunk[i][0].label, chunk[i][1]), None)
                    returns[i] = self._launch([batch[i][:-1]])[0]
                    folders[i] = None
            for done, ((c, seed), ret, folder) in enumerate(zip(chunk, returns, folders), start=start + 1):
                record: dict[str, Any] = {"params": {k: jsonable(v) for k, v in c.params.items()}}
                try:
                    value = job_value(ret)  # re-raises a failed job's exception
                    run_dir = folder or ret.hydra_cfg.hydra.runtime.output_dir  # a continued run: its first folder
                    record["metrics"] = job_metrics(value, self.results_key)
                    record["folder"] = str(run_dir)
                except Exception as exc:  # noqa: BLE001 - a failed run is recorded and shown, the rest goes on
                    record["error"] = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
                    log.warning("Confirm %s seed %d FAILED: %s", c.label, seed, record["error"])
                study.set_user_attr(attr_key(c.label, seed), record)
                eta = (time.monotonic() - started) / done * (len(jobs) - done)
                outcome = (", ".join(f"{k} {v:.4g}" for k, v in list(record["metrics"].items())[:3])
                           if "metrics" in record else "FAILED")
                log.info("confirm %d/%d %s seed %d: %s%s", done, len(jobs), c.label, seed, outcome,
                         f", ETA {as_minutes(eta)}" if done < len(jobs) else "")
        return self._confirm_report(study, sweep_dir)

    def _stopped_confirm_run(self, study: Any, key: str) -> Path | None:
        """The folder of this confirm job's stopped run, when it can go on (else None: it starts over)."""
        folder = study.user_attrs.get(key)
        if self.resume_key is None or not continuable(folder, self.resume_file, self.results_file):
            return None
        return Path(str(folder))

    def _confirm_report(self, study: Any, sweep_dir: Path | None) -> list[dict[str, Any]]:
        """The confirm table on the console, and into ``sweep_dir`` (``confirm.md``, ``confirm.csv``) if given;
        its rows, as confirm.csv has them."""
        from narm_lightning.io import write_text_atomic
        from narm_lightning.sweeping.confirm import (
            CSV_FILE,
            MARKDOWN_FILE,
            stored,
            summarize,
            table,
            to_csv,
            to_markdown,
        )

        chosen, seeds = self._confirm_plan(study)
        results = {k: v for k, v in stored(study).items() if k[1] in seeds}
        rows = summarize(results, [c.label for c in chosen])
        params = {c.label: c.params for c in chosen}
        markdown = to_markdown(rows, params, seeds)
        log.info("Confirm step (%s):\n%s", study.study_name, markdown)
        if sweep_dir is not None:
            write_text_atomic(sweep_dir / MARKDOWN_FILE, markdown)
            write_text_atomic(sweep_dir / CSV_FILE, to_csv(rows, params))
        return table(rows, params)
