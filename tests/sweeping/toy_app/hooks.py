"""A report hook for the sweeper tests: keeps what the sweeper hands over, to compare with the files it wrote."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any


def save_report(report: Any, config: Any) -> None:
    """Appends the report, as JSON, to ``report.jsonl`` in the sweep folder (one line per call)."""
    with (report.sweep_dir / "report.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({**asdict(report), "sweep_dir": str(report.sweep_dir), "job": config.hydra.job.name},
                            default=str) + "\n")
