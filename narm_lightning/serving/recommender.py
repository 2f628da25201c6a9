"""Top-K recommendations in the dataset's original item ids, from a checkpoint or an exported model.

Plain torch at inference (no Lightning): a checkpoint is read weights-only (``safe_load``), so loading one
never runs pickled code. ``Recommender`` is the Python API; ``serving.cli`` the command line.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import nn

from narm_lightning.errors import ConfigError, DataError, first_line
from narm_lightning.io import require_regular_file
from narm_lightning.model.narm import NARM
from narm_lightning.safe_load import load_torch_checkpoint

DEFAULT_MAX_LEN = 50  # RecBole's MAX_ITEM_LIST_LENGTH; used when a checkpoint predates hyper_parameters["data"]
PAD_TOKEN = "[PAD]"  # noqa: S105 - the padding item id, not a secret
Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Session = Sequence[str | int]


@dataclass(frozen=True)
class Recommendation:
    """One session's answer: original item ids best first, their scores, and the ids the model never saw.

    ``source`` is ``model`` (NARM's ranking of the session) or ``popular``: the session had no item the model knows,
    so it is answered with the most popular training items (scores: their counts as training targets)."""

    items: list[str]
    scores: list[float]
    unknown: list[str] = field(default_factory=list)
    source: str = "model"


def _model_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The NARM weights inside a LightningModule state dict (they live under ``model.``)."""
    return {k[len("model."):]: v for k, v in state_dict.items() if k.startswith("model.")}


class ScoringModel(nn.Module):
    """``NARM.predict`` as ``forward``: the one function a serving system calls."""

    def __init__(self, model: NARM) -> None:
        super().__init__()
        self.model = model

    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        return self.model.predict(item_seq, item_seq_len)


def narm_from(model_config: dict[str, Any], weights: dict[str, torch.Tensor]) -> NARM:
    """A NARM built from its saved config (``loss_type`` is the module's, not the model's), weights in, eval mode.
    Its GRU is ``nn.GRU`` whatever the run trained with (the same weights): TorchScript and ONNX export need it.

    The model is laid out on torch's ``meta`` device first (shapes, no memory) and its shapes compared with the
    weights', so a config that claims sizes its weights do not have (10^9 items) is refused before anything is
    allocated; the weights are then taken as they are (``assign``), never copied into a second set."""
    kwargs = {k: v for k, v in model_config.items() if k not in ("loss_type", "gru_impl")}
    with torch.device("meta"):
        model = NARM(**kwargs, gru_impl="torch")
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    given = {name: tuple(t.shape) for name, t in weights.items() if isinstance(t, torch.Tensor)}
    if expected != given:
        differ = sorted(n for n in set(expected) | set(given) if expected.get(n) != given.get(n))[:3]
        said = "; ".join(f"{n}: config {expected.get(n, 'none')}, weights {given.get(n, 'none')}" for n in differ)
        raise ValueError(f"the model config and the weights disagree ({said})")
    model.load_state_dict(weights, assign=True)
    return model.eval()


def check_item_ids(model: NARM, tokens: Sequence[Any], where: Path) -> None:
    """One original id per row of the item table: a shorter list would name recommendations out of range."""
    rows = model.item_embedding.num_embeddings
    if len(tokens) != rows:
        raise DataError(f"{where}: {len(tokens):,} item ids for a model of {rows:,} items (padding included); "
                        "expected one id a row. Re-export from the checkpoint.")


def check_popularity(counts: Any, n_items: int, where: Path) -> list[int] | None:
    """A checkpoint's or export's item counts (one non-negative int per item id, padding first), or None where it has
    none (it predates them); anything else is refused, naming the file."""
    if counts is None:
        return None
    if (not isinstance(counts, list) or len(counts) != n_items
            or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)):
        raise DataError(f"{where}: item_popularity is not {n_items} non-negative integers (one per item id); the file "
                        "is damaged or was not written by this program.")
    return counts


def build_model(ckpt: dict[str, Any], path: str | Path = "the checkpoint") -> NARM:
    """The NARM of a loaded checkpoint, weights in, eval mode (dropout off)."""
    try:
        return narm_from(ckpt["hyper_parameters"]["model"], _model_state(ckpt["state_dict"]))
    except (TypeError, RuntimeError, AttributeError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: its hyper_parameters do not describe its weights ({first_line(exc)}); use the "
                        "best.ckpt/last.ckpt that `python train.py` writes.") from None


def max_len_of(ckpt: dict[str, Any]) -> int:
    """The history window the model was trained with (sessions keep their last this-many items)."""
    return int((ckpt["hyper_parameters"].get("data") or {}).get("max_item_list_length", DEFAULT_MAX_LEN))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A narm-lightning checkpoint, checked for what serving needs, with errors the user can act on."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"checkpoint {path} does not exist; pass ckpt=<run_dir>/checkpoints/best.ckpt.")
    ckpt = load_torch_checkpoint(path)
    model_cfg = ckpt.get("hyper_parameters", {}).get("model") if isinstance(ckpt, dict) else None
    if not model_cfg or "n_items" not in model_cfg or not _model_state(ckpt.get("state_dict", {})):
        raise DataError(
            f"{path} is not a narm-lightning checkpoint: it lacks hyper_parameters['model'] or the model.* "
            "weights. Use the best.ckpt/last.ckpt that `python train.py` writes."
        )
    if "item_tokens" not in ckpt:
        raise DataError(
            f"{path} has no item_tokens (the original item ids), so its recommendations cannot be named; "
            "retrain with this version of narm-lightning."
        )
    return ckpt


EXPORT_FILES = ("weights.pt", "meta.json", "item_ids.json")


def _read_json(path: Path, kind: type, what: str) -> Any:
    """A JSON file of the given top-level type, or a ``DataError`` naming it."""
    try:
        doc = json.loads(require_regular_file(path, f"JSON ({what})").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({first_line(exc)}); expected {what}.") from None
    if not isinstance(doc, kind):
        raise DataError(f"{path}: holds a JSON {type(doc).__name__}; expected {what}.")
    return doc


class Recommender:
    """Ranks every item for each session and names the top K by their original ids.

    ``scorer(item_seq [B, L], item_seq_len [B]) -> scores [B, n_items]`` with column 0 (padding) at
    ``-inf``: ``NARM.predict`` or the exported TorchScript module, so both paths share this ranking code.
    """

    def __init__(self, scorer: Scorer, item_tokens: Sequence[str], max_len: int = DEFAULT_MAX_LEN,
                 popularity: Sequence[int] | None = None) -> None:
        if len(item_tokens) < 2 or item_tokens[0] != PAD_TOKEN:
            raise DataError(f"item ids must start with {PAD_TOKEN!r} followed by at least one item")
        self.scorer = scorer
        self.item_tokens = [str(t) for t in item_tokens]
        self.index = {t: i for i, t in enumerate(self.item_tokens) if i > 0}
        self.max_len = int(max_len)
        # items by training count, most first (ties: the earlier id); None for a checkpoint that predates the counts
        self.popular = None if popularity is None else sorted(range(1, len(popularity)),
                                                               key=lambda i: (-popularity[i], i))
        self.popularity = None if popularity is None else list(popularity)

    @property
    def n_items(self) -> int:
        """Rows of the item table, padding included (as ``NARM.n_items``)."""
        return len(self.item_tokens)

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> Recommender:
        """The best/last checkpoint of a training run, on CPU, in eval mode."""
        ckpt = load_checkpoint(path)
        model = build_model(ckpt, path)
        check_item_ids(model, ckpt["item_tokens"], Path(path))
        popularity = check_popularity(ckpt.get("item_popularity"), len(ckpt["item_tokens"]), Path(path))
        return cls(model.predict, ckpt["item_tokens"], max_len_of(ckpt), popularity)

    @classmethod
    def from_export(cls, directory: str | Path) -> Recommender:
        """What ``narm_lightning.export`` wrote: ``weights.pt`` + ``meta.json`` + ``item_ids.json``.

        The model is rebuilt from this package's own code and scripted here; the folder's ``model.ts`` (code,
        for other runtimes) is never loaded, so a crafted export folder cannot run anything.
        """
        directory = Path(directory)
        files = [directory / n for n in EXPORT_FILES]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise DataError(f"{directory} is not an export folder of this version: missing {', '.join(missing)} "
                            "(re-export with `narm-recommend export ckpt=... dir=...`).")
        weights, meta, item_ids = files
        meta_doc, tokens = _read_json(meta, dict, "the export's meta.json"), _read_json(item_ids, list, "a list")
        model_config = meta_doc.get("model")
        state = load_torch_checkpoint(weights, "weights file (a NARM state_dict written by export)")
        try:
            model = narm_from(model_config, state)  # type: ignore[arg-type]
        except (TypeError, RuntimeError, AttributeError, ValueError) as exc:
            raise DataError(f"{weights}: does not fit the model described in {meta} ({first_line(exc)}); "
                            "re-export both from one checkpoint.") from None
        check_item_ids(model, tokens, item_ids)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still the fast path
            scorer = torch.jit.script(ScoringModel(model).eval())
        popularity = check_popularity(meta_doc.get("item_popularity"), len(tokens), meta)
        return cls(scorer, tokens, meta_doc.get("max_item_list_length", DEFAULT_MAX_LEN), popularity)

    def encode(self, session: Session, strict: bool = False) -> tuple[list[int], list[str]]:
        """Internal ids of the last ``max_len`` known items, and the unknown ids (reported, never hidden)."""
        ids: list[int] = []
        unknown: list[str] = []
        for token in session:
            i = self.index.get(str(token))
            if i is None:
                unknown.append(str(token))
            else:
                ids.append(i)
        if strict and unknown:
            raise DataError(f"unknown item ids {unknown[:5]} (strict mode): they were not in the training data.")
        return ids[-self.max_len:], unknown

    @torch.no_grad()
    def _rank(self, encoded: list[list[int]], k: int, exclude_seen: bool) -> list[tuple[list[str], list[float]]]:
        """Top-K of one chunk of non-empty sessions, padded to its longest row."""
        width = max(len(ids) for ids in encoded)
        seq = torch.zeros(len(encoded), width, dtype=torch.long)
        for row, ids in enumerate(encoded):
            seq[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        lengths = torch.tensor([len(ids) for ids in encoded], dtype=torch.long)
        scores = self.scorer(seq, lengths).clone()
        scores[:, 0] = float("-inf")
        if exclude_seen:
            scores.scatter_(1, seq, float("-inf"))  # column 0 again for the padding: already -inf
        top_scores, top_ids = scores.topk(min(k, self.n_items - 1), dim=1)
        out = []
        for s_row, i_row in zip(top_scores.tolist(), top_ids.tolist()):
            kept = [(i, s) for i, s in zip(i_row, s_row) if s != float("-inf")]
            out.append(([self.item_tokens[i] for i, _ in kept], [s for _, s in kept]))
        return out

    def recommend_iter(
        self, sessions: Iterable[Session], k: int = 20, exclude_seen: bool = False, batch_size: int = 256,
        strict: bool = False,
    ) -> Iterator[Recommendation]:
        """Lazily, in chunks of ``batch_size`` sessions: memory stays bounded however many sessions come.

        Arguments are checked here, before the first session is read (not on the first ``next``).
        """
        if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
            raise ConfigError(f"k must be a positive integer (how many items to recommend), got {k!r}.")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
        return self._iter(iter(sessions), k, exclude_seen, batch_size, strict)

    def _iter(self, it: Iterator[Session], k: int, exclude_seen: bool, batch_size: int,
              strict: bool) -> Iterator[Recommendation]:
        while chunk := list(islice(it, batch_size)):
            encoded = [self.encode(s, strict) for s in chunk]
            known = [ids for ids, _ in encoded if ids]
            ranked = iter(self._rank(known, k, exclude_seen) if known else [])
            for ids, unknown in encoded:
                if ids:
                    yield Recommendation(*next(ranked), unknown)
                elif self.popular is not None and self.popularity is not None:
                    top = self.popular[:k]
                    yield Recommendation([self.item_tokens[i] for i in top], [float(self.popularity[i]) for i in top],
                                         unknown, source="popular")
                else:
                    yield Recommendation([], [], unknown)

    def recommend(
        self, sessions: Iterable[Session], k: int = 20, exclude_seen: bool = False, batch_size: int = 256,
        strict: bool = False,
    ) -> list[Recommendation]:
        """Top-``k`` items for each session (original ids, padding never, seen items too unless excluded).

        A session with no known item (empty, or every id unknown) gets the most popular training items, marked
        ``source="popular"`` (none from a checkpoint without item counts) and lists its unknown ids; ``strict=True``
        raises a ``DataError`` on the first unknown id instead.
        """
        return list(self.recommend_iter(sessions, k, exclude_seen, batch_size, strict))
