"""A persistent study as a text file, and back: so a study that outlasts a session resumes on a fresh checkout.

    python -m bench.study.snapshot export --study NAME --storage sqlite:///.../study.db --file SNAPSHOT.journal
    python -m bench.study.snapshot import --study NAME --storage sqlite:///.../study.db --file SNAPSHOT.journal

The storage itself (SQLite) is a binary run output and stays out of git; the snapshot is Optuna's own journal
format (one JSON operation a line: the study's attributes, every trial's params, states, intermediate and final
values, attributes and times), written with ``optuna.copy_study`` and read back the same way, so a round trip
gives the same trials. ``export`` replaces the file atomically; ``import`` refuses to overwrite a study that is
already in the storage (resume that one instead). ``make study-hyper-test-save`` / ``make study-hyper-test``
use it for issue 20's study.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path


def _journal(path: Path):  # noqa: ANN202 - optuna's storage type, imported lazily
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    with warnings.catch_warnings():  # JournalFileBackend is marked experimental in some optuna releases
        warnings.simplefilter("ignore")
        return JournalStorage(JournalFileBackend(str(path)))


def main(argv: list[str] | None = None) -> int:
    import optuna

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("export", "import"))
    parser.add_argument("--study", required=True)
    parser.add_argument("--storage", required=True, help="the live storage URL (sqlite:///... or postgresql://...)")
    parser.add_argument("--file", type=Path, required=True, help="the snapshot (Optuna journal, text)")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.action == "import" and not args.file.is_file():  # before the storage is opened (and created)
        print(f"study_snapshot: no snapshot file {args.file}", file=sys.stderr)
        return 2
    names = {s.study_name for s in optuna.get_all_study_summaries(args.storage)}
    if args.action == "export":
        if args.study not in names:
            print(f"study_snapshot: no study {args.study!r} in {args.storage}", file=sys.stderr)
            return 2
        args.file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=args.file.parent, prefix=".snapshot-")
        os.close(fd)
        os.unlink(tmp)  # the journal backend creates its file itself
        try:
            optuna.copy_study(from_study_name=args.study, from_storage=args.storage, to_storage=_journal(Path(tmp)))
            os.replace(tmp, args.file)
        finally:
            Path(tmp).unlink(missing_ok=True)
        print(f"study_snapshot: {args.study} -> {args.file}")
        return 0
    if args.study in names:
        print(f"study_snapshot: {args.storage} already holds study {args.study!r}; not overwritten (resume it, "
              "or move the storage away to restore the snapshot)", file=sys.stderr)
        return 2
    optuna.copy_study(from_study_name=args.study, from_storage=_journal(args.file), to_storage=args.storage)
    print(f"study_snapshot: {args.file} -> study {args.study} in {args.storage}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
