"""The serving programs' keys: ``narm-recommend`` and ``narm-recommend export``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from narm_lightning.config.rules import BOOLEAN, TEXT, Rule, integer, is_list, key, one_of

SERVING_FORMATS = ("tsv", "jsonl")


EXPORT_FORMATS = ("torchscript", "onnx")


@dataclass
class RecommendConfig:
    """Top-K recommendations: ``narm-recommend ckpt=<run>/checkpoints/best.ckpt [key=value ...]``."""

    ckpt: str | None = key(None, "a training checkpoint (best.ckpt / last.ckpt); or use export_dir", TEXT)
    export_dir: str | None = key(None, "a folder written by `narm-recommend export` instead of ckpt", TEXT)
    sessions: Any = key(None, "inline sessions, e.g. '[\"242 302\",\"51\"]' (each string: item ids separated by "
                        "spaces)", Rule("null or a list of sessions, e.g. '[\"242 302\",\"51\"]'",
                                        lambda v: v is None or is_list(v)))
    input: str | None = key(None, "file with one session a line, read lazily in chunks of batch_size lines; - (or "
                             "/dev/stdin) reads standard input", TEXT)
    output: str | None = key(None, "where to write (atomically: temp file, renamed at the end); null prints to "
                             "stdout", TEXT)
    format: str = key("tsv", "tsv: line<TAB>items<TAB>scores<TAB>unknown<TAB>source (space-separated); jsonl: one "
                      "object a line",
                      one_of(SERVING_FORMATS))
    k: int = key(20, "how many items to recommend per session", integer())
    exclude_seen: bool = key(False, "true: never recommend an item already in the session", BOOLEAN)
    strict: bool = key(False, "true: an unknown item id is an error; false: it is reported and the rest is used",
                       BOOLEAN)
    batch_size: int = key(256, "sessions scored together (bounds memory: batch_size x n_items scores)", integer())
    num_threads: int | None = key(None, "torch CPU threads; null keeps torch's default", integer())


@dataclass
class ExportConfig:
    """Export the scoring model: ``narm-recommend export ckpt=<best.ckpt> dir=<folder>``."""

    ckpt: str | None = key(None, "the training checkpoint to export (best.ckpt / last.ckpt)", TEXT)
    dir: str | None = key(None, "output folder: model.ts (and model.onnx), item_ids.json, meta.json, weights.pt",
                          TEXT)
    formats: list[str] = key(["torchscript"], "any of: torchscript, onnx (onnx needs pip install "
                             "'narm-lightning[onnx]')",
                             Rule(f"a non-empty list drawn from {', '.join(EXPORT_FORMATS)}",
                                  lambda v: is_list(v) and len(v) > 0 and all(x in EXPORT_FORMATS for x in v),
                                  EXPORT_FORMATS))
    k: int = key(20, "default K recorded in meta.json for serving systems", integer())
