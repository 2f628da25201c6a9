"""Reading offline W&B runs back in tests: the ``.wandb`` transaction log, parsed with wandb's own protobufs.

wandb 0.31 offline runs write no ``config.yaml`` / ``wandb-summary.json``; everything lives in
``run-<id>.wandb``, a LevelDB-style log (32 KiB blocks of crc32/length/type-framed chunks) after a 7-byte
``:W&B`` header. wandb 0.31 has no Python reader for it any more, hence these few lines.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError
from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
FULL, LAST = 1, 4


def read_records(path: Path) -> list[pb.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    records, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if (kind == 0 and length == 0) or pos + 7 + length > len(data):
            break  # the end, or a chunk wandb-core is still writing: read what is whole
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


@dataclass
class OfflineRun:
    """What a finished offline run holds: the last run record, config, summary, history rows, exit code."""

    path: Path
    run_id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    exit_code: int | None = None
    start: float = 0.0


def _set(target: dict[str, Any], item: Any) -> None:
    """``key`` is flat; ``nested_key`` is a path (a logged table arrives as one item per field)."""
    path = [item.key] if item.key else list(item.nested_key)
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = json.loads(item.value_json)


def read_run(path: Path) -> OfflineRun:
    run = OfflineRun(path)
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.name, run.group, run.job_type = r.run_id, r.display_name, r.run_group, r.job_type
            run.tags = list(r.tags)
            run.start = r.start_time.seconds + r.start_time.nanos / 1e9
            for u in r.config.update:
                _set(run.config, u)
        elif kind == "config":
            for u in record.config.update:
                _set(run.config, u)
        elif kind == "summary":
            for u in record.summary.update:
                _set(run.summary, u)
        elif kind == "history":
            row: dict[str, Any] = {}
            for i in record.history.item:
                _set(row, i)
            run.history.append(row)
        elif kind == "artifact":
            run.artifacts.append(record.artifact.type)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def offline_runs(root: Path, timeout: float = 30.0) -> list[OfflineRun]:
    """Every offline run under ``root``, oldest first (``latest-run`` links skipped), once all are complete.

    ``run.finish()`` returns before wandb-core has flushed the log to disk, so wait for every exit record.
    """
    deadline = time.monotonic() + timeout
    while True:
        late = time.monotonic() > deadline
        paths = sorted(p for p in root.rglob("offline-run-*/run-*.wandb") if "latest-run" not in p.parts)
        try:
            runs = sorted((read_run(p) for p in paths), key=lambda r: r.start)
        except DecodeError:
            if late:
                raise
            runs = []  # a record caught half-flushed: read again once it is whole
        # no run yet is not "all complete": wait for one to appear (a finishing writer may not have created it)
        if (runs and all(r.exit_code is not None for r in runs)) or late:
            return runs
        time.sleep(0.2)
