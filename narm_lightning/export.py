"""Export the scoring model for serving without this package: TorchScript (and ONNX when ``onnx`` is installed).

The folder holds ``model.ts`` (scores ``[B, n_items]`` for ``(item_seq [B, L] int64, item_seq_len [B] int64)``,
padding column at ``-inf``), ``item_ids.json`` (original id of each column, index 0 = ``"[PAD]"``) and
``meta.json``. ``Recommender.from_export(folder)`` serves it with the same ranking code as a checkpoint.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from narm_lightning.errors import ConfigError
from narm_lightning.io import write_json_atomic
from narm_lightning.model import NARM
from narm_lightning.recommend import build_model, load_checkpoint, max_len_of

FORMATS = ("torchscript", "onnx")


class ScoringModel(nn.Module):
    """``NARM.predict`` as ``forward``: the one function a serving system calls."""

    def __init__(self, model: NARM) -> None:
        super().__init__()
        self.model = model

    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        return self.model.predict(item_seq, item_seq_len)


def _save_atomic(path: Path, save: Any) -> None:
    """``save(tmp_path)`` then rename, so a half-written model file never sits under the final name."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _check_onnx_available() -> None:
    """Before anything is written: torch's ONNX exporter needs the separate ``onnx`` package."""
    if importlib.util.find_spec("onnx") is None:
        raise ConfigError(
            "formats=[onnx] needs the `onnx` package (pip install onnx; onnxruntime to run the result), which "
            "is not installed; export with formats=[torchscript] instead."
        )


def _export_onnx(scoring: ScoringModel, path: Path) -> None:
    example = (torch.tensor([[1, 1]], dtype=torch.long), torch.tensor([2], dtype=torch.long))
    # the TorchScript-based exporter handles the GRU; batch and length stay dynamic axes
    _save_atomic(path, lambda tmp: torch.onnx.export(
        scoring, example, tmp, dynamo=False, input_names=["item_seq", "item_seq_len"], output_names=["scores"],
        dynamic_axes={"item_seq": {0: "batch", 1: "length"}, "item_seq_len": {0: "batch"}, "scores": {0: "batch"}},
    ))


def export(ckpt: str | Path, out_dir: str | Path, formats: Sequence[str] = ("torchscript",), k: int = 20) -> Path:
    """Write the scoring model of ``ckpt`` and its item-id mapping into ``out_dir``; returns the folder."""
    formats = [str(f).lower() for f in formats]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ConfigError(f"formats must be a non-empty list of {list(FORMATS)}, got {formats}.")
    if not isinstance(k, int) or k <= 0:
        raise ConfigError(f"k must be a positive integer, got {k!r}.")
    if "onnx" in formats:
        _check_onnx_available()
    checkpoint = load_checkpoint(ckpt)
    model = build_model(checkpoint)
    scoring = ScoringModel(model).eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if "torchscript" in formats:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still the portable form
            scripted = torch.jit.script(scoring)  # scripted, not traced: batch size and length stay free
        _save_atomic(out / "model.ts", lambda tmp: torch.jit.save(scripted, tmp))
    if "onnx" in formats:
        _export_onnx(scoring, out / "model.onnx")
    write_json_atomic(out / "item_ids.json", list(checkpoint["item_tokens"]))
    write_json_atomic(out / "meta.json", {
        "n_items": model.n_items,
        "max_item_list_length": max_len_of(checkpoint),
        "k": k,
        "formats": formats,
        "inputs": {"item_seq": "[B, L] int64, left-aligned, 0-padded", "item_seq_len": "[B] int64"},
        "output": "scores [B, n_items] float32; column i is item_ids[i]; column 0 (padding) is -inf",
        "model": checkpoint["hyper_parameters"]["model"],
        "source": str(ckpt),
    })
    return out
