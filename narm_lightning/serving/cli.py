"""The serving command line: ``narm-recommend [export] key=value ...`` (``python -m narm_lightning.serving``).

Configs are the interface (``conf/recommend.yaml``, ``conf/export.yaml``, every key commented). They are
composed with Hydra's compose API rather than ``@hydra.main``, so answering a query never makes a run
folder or reconfigures logging. Errors are one paragraph on stderr and exit status 2.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import torch
from omegaconf import DictConfig, ListConfig

from narm_lightning import CONF_DIR
from narm_lightning.cli.exits import composition_error, run_or_exit
from narm_lightning.cli.help import print_help_if_asked, serving_sections
from narm_lightning.config.rules import schema_problems
from narm_lightning.config.serving import SERVING_FORMATS, ExportConfig, RecommendConfig
from narm_lightning.errors import ConfigError, DataError
from narm_lightning.io import atomic_open
from narm_lightning.serving.recommender import Recommendation, Recommender

FORMATS = SERVING_FORMATS
SHOW_UNKNOWN = 5  # how many unknown ids the stderr summary names
EXAMPLES = [
    "narm-recommend ckpt=outputs/ml-100k/<run>/checkpoints/best.ckpt k=20 sessions='[\"242 302\",\"51\"]'",
    "narm-recommend ckpt=<best.ckpt> input=sessions.txt output=recs.tsv exclude_seen=true",
    "narm-recommend export ckpt=<best.ckpt> dir=exported/ 'formats=[torchscript,onnx]'",
    "narm-recommend export_dir=exported/ input=sessions.txt format=jsonl",
]


def compose_config(name: str, overrides: list[str]) -> DictConfig:
    """``conf/<name>.yaml`` with command-line overrides; a misspelled key is a ``ConfigError``."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from narm_lightning.config.schema import register

    register()  # the schemas into Hydra's ConfigStore: the shipped YAML includes them
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name=name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise composition_error(exc, "narm-recommend") from exc
    problems = schema_problems(cfg, {"recommend": RecommendConfig, "export": ExportConfig}[name])
    if problems:
        raise ConfigError(f"Invalid {name} config: " + "; ".join(problems) + ".")
    return cfg


def split_session(value: Any) -> list[str]:
    """One session: a string of ids separated by whitespace, one id, or a list of ids."""
    if isinstance(value, (list, tuple, ListConfig)):
        return [str(v) for v in value]
    return str(value).split()


STDIN_NAMES = ("-", "/dev/stdin")  # input= values that mean standard input (a pipe is no regular file)


def read_sessions(path: Path, stream: BinaryIO | None = None) -> Iterator[list[str]]:
    """Sessions of ``path`` (or of ``stream``, standard input, named ``path``), one a line, read lazily (a blank
    line is a session with no items); a line that is not UTF-8 (a Latin-1 or UTF-16 file) is a ``DataError``
    naming the file and the line."""
    with path.open("rb") if stream is None else contextlib.nullcontext(stream) as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                utf16 = line_no == 1 and raw[:2] in (b"\xff\xfe", b"\xfe\xff")
                hint = (" (it starts with a UTF-16 byte-order mark: iconv -f UTF-16 -t UTF-8 converts it)" if utf16
                        else "")
                raise DataError(f"{path}, line {line_no}: is not UTF-8 text (byte {exc.start}){hint}; expected one "
                                "session a line, item ids separated by spaces.") from None
            yield line.split()


def format_line(line_no: int, rec: Recommendation, fmt: str) -> str:
    if fmt == "jsonl":
        return json.dumps({"line": line_no, "items": rec.items, "scores": rec.scores, "unknown": rec.unknown,
                           "source": rec.source}) + "\n"
    scores = " ".join(f"{s:.6g}" for s in rec.scores)
    return f"{line_no}\t{' '.join(rec.items)}\t{scores}\t{' '.join(rec.unknown)}\t{rec.source}\n"


class UnknownReport:
    """Counts sessions with unknown ids as they stream past, for one summary line on stderr."""

    def __init__(self) -> None:
        self.sessions = self.with_unknown = self.unknown_ids = self.empty = self.popular = 0
        self.examples: list[str] = []

    def add(self, rec: Recommendation) -> None:
        self.sessions += 1
        self.empty += not rec.items
        self.popular += rec.source == "popular"
        if rec.unknown:
            self.with_unknown += 1
            self.unknown_ids += len(rec.unknown)
            self.examples.extend(u for u in rec.unknown if u not in self.examples and len(self.examples) < SHOW_UNKNOWN)

    def summary(self) -> str | None:
        notes = []
        if self.with_unknown:
            notes.append(f"warning: {self.with_unknown} of {self.sessions} sessions had item ids not in the training "
                         f"data ({self.unknown_ids} in all, e.g. {', '.join(self.examples)}); they were left out of "
                         "the input and are listed in the output's unknown field.")
        if self.popular:
            notes.append(f"note: {self.popular} of {self.sessions} sessions had no item the model knows; they are "
                         "answered with the most popular training items (source: popular).")
        if self.empty:
            notes.append(f"warning: {self.empty} of {self.sessions} sessions had no item the model knows and got no "
                         "items: this checkpoint predates the item counts that answer them (retrain to get them).")
        return " ".join(notes) or None


def write_stream(lines: Iterable[str], output: Path | None, stdout: TextIO) -> int:
    """Write lines as they come; to ``output`` via a temp file renamed at the end (never half-written)."""
    count = 0
    if output is None:
        for line in lines:
            stdout.write(line)
            count += 1
        stdout.flush()
        return count
    with atomic_open(output, "w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line)
            count += 1
    return count


def _sessions(cfg: DictConfig) -> Iterator[list[str]]:
    if (cfg.sessions is None) == (cfg.input is None):
        raise ConfigError("give exactly one of sessions='[\"242 302\",\"51\"]' or input=<file, one session a line>.")
    if cfg.sessions is not None:
        if isinstance(cfg.sessions, str):
            raise ConfigError(f"sessions must be a list of sessions, e.g. sessions='[\"242 302\",\"51\"]', "
                              f"got the string {cfg.sessions!r}.")
        bare = [s for s in cfg.sessions if isinstance(s, (int, float)) and not isinstance(s, bool)]
        if bare:  # sessions=[242,302]: Hydra reads two numbers; were they one session or two? ask, never guess
            raise ConfigError(f"sessions holds bare numbers ({', '.join(map(str, bare[:3]))}); expected each session "
                              "as a string of ids or a list: sessions='[\"242 302\"]' or sessions=[[242,302]] for one "
                              "session of two items, sessions='[\"242\",\"302\"]' for two sessions.")
        items = [split_session(s) for s in cfg.sessions]
        if not items:
            raise DataError("sessions is empty: there is nothing to recommend for.")
        return iter(items)
    path = Path(cfg.input)
    if str(cfg.input) in STDIN_NAMES:
        sessions = read_sessions(Path("<stdin>"), sys.stdin.buffer)
    elif not path.is_file():
        what = "does not exist" if not path.exists() else "is not a regular file (use input=- for standard input)"
        raise DataError(f"input file {path} {what} (one session a line, item ids separated by spaces).")
    else:
        sessions = read_sessions(path)
    first = next(sessions, None)
    if first is None:
        raise DataError(f"input file {path} is empty: there is nothing to recommend for.")
    return chain([first], sessions)


def load_recommender(cfg: DictConfig) -> Recommender:
    if (cfg.ckpt is None) == (cfg.export_dir is None):
        raise ConfigError("give exactly one of ckpt=<run>/checkpoints/best.ckpt or export_dir=<exported folder>.")
    return Recommender.from_checkpoint(cfg.ckpt) if cfg.ckpt is not None else Recommender.from_export(cfg.export_dir)


def recommend_command(cfg: DictConfig, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> int:
    """Run ``conf/recommend.yaml``: stream sessions in, recommendations out; returns the lines written."""
    if cfg.format not in FORMATS:
        raise ConfigError(f"format must be one of {list(FORMATS)}, got {cfg.format!r}.")
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    sessions = _sessions(cfg)
    recommender = load_recommender(cfg)
    report = UnknownReport()
    recs = recommender.recommend_iter(sessions, k=cfg.k, exclude_seen=bool(cfg.exclude_seen),
                                      batch_size=cfg.batch_size, strict=bool(cfg.strict))

    def lines() -> Iterator[str]:
        for line_no, rec in enumerate(recs, start=1):
            report.add(rec)
            yield format_line(line_no, rec, cfg.format)

    count = write_stream(lines(), Path(cfg.output) if cfg.output else None, stdout)
    if (summary := report.summary()) is not None:
        print(summary, file=stderr)
    if cfg.output:
        print(f"wrote {count} recommendation lines to {cfg.output}", file=stderr)
    return count


def export_command(cfg: DictConfig) -> Path:
    """Run ``conf/export.yaml``."""
    from narm_lightning.serving.export import export  # torch.jit / ONNX machinery: only when exporting

    if cfg.ckpt is None or cfg.dir is None:
        raise ConfigError("export needs ckpt=<run>/checkpoints/best.ckpt and dir=<output folder>.")
    formats = [cfg.formats] if isinstance(cfg.formats, str) else list(cfg.formats)
    out = export(cfg.ckpt, cfg.dir, formats=formats, k=cfg.k)
    print(f"exported {', '.join(formats)} to {out}", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> None:
    """``[export] key=value ...``: recommend (the default) or export."""
    args = list(sys.argv[1:] if argv is None else argv)
    exporting = bool(args) and args[0] == "export"
    configs = ["export"] if exporting else ["recommend", "export"]
    print_help_if_asked(["narm-recommend", *args], "narm-recommend", lambda: serving_sections(configs), EXAMPLES)
    if exporting:
        run_or_exit(lambda: export_command(compose_config("export", args[1:])))
    else:
        run_or_exit(lambda: recommend_command(compose_config("recommend", args)))
