"""Export the scoring model for serving without this package: TorchScript, and ONNX with the ``onnx`` extra.

The folder holds ``model.ts`` and/or ``model.onnx`` (scores ``[B, n_items]`` for ``(item_seq [B, L] int64,
item_seq_len [B] int64)``, padding column at ``-inf``, batch and length free), ``item_ids.json`` (original id
of each column, index 0 = ``"[PAD]"``), ``meta.json`` and ``weights.pt`` (the NARM state_dict).
``Recommender.from_export(folder)`` rebuilds the model from ``meta.json`` + ``weights.pt`` with this package's
code (never loading ``model.ts``: TorchScript is code); ``model.ts`` / ``model.onnx`` are for other runtimes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from narm_lightning.config.serving import EXPORT_FORMATS
from narm_lightning.errors import ConfigError, first_line
from narm_lightning.io import atomic_path, fsync_path, write_bytes_atomic, write_json_atomic
from narm_lightning.serving.recommender import ScoringModel, build_model, load_checkpoint, max_len_of

FORMATS = EXPORT_FORMATS


ONNX_PACKAGES = ("onnx", "onnxscript")  # torch's default (torch.export-based) ONNX exporter imports both


def _missing_onnx_packages() -> list[str]:
    return [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]


def _check_onnx_available() -> None:
    """Before anything is written: torch's ONNX exporter needs packages this project does not require."""
    missing = _missing_onnx_packages()
    if missing:
        raise ConfigError(
            f"formats=[onnx] needs the {', '.join(f'`{m}`' for m in missing)} package(s), which are not installed "
            "(pip install 'narm-lightning[onnx]' installs onnx, onnxscript and onnxruntime to run the result); "
            "export with formats=[torchscript] instead."
        )


def _onnx_failed(reason: str) -> ConfigError:
    return ConfigError(
        f"formats=[onnx]: the ONNX export of the scoring model failed ({reason}). Nothing was written under "
        "model.onnx; formats=[torchscript] exports the same model and is tested against the checkpoint."
    )


@contextlib.contextmanager
def _quiet_fresh_gru_export() -> Iterator[None]:
    """Silence the exporter's progress noise and give the GRU a clean dispatch cache before and after.

    Why the cache: for dynamic shapes torch 2.13's exporter swaps a ``while_loop`` GRU decomposition into
    ``aten.gru.input.py_kernels`` without clearing the op's ``_dispatch_cache``. Once one export has run in
    the process, the cache holds the default Python-loop decomposition, which unrolls the GRU over the
    example's length and freezes the sequence axis in every later export (the first one is fine).
    """
    op = torch.ops.aten.gru.input
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)  # "torchvision is not installed" registry notes, progress lines
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch-internal Future/User/Deprecation warnings of the exporter
            getattr(op, "_dispatch_cache", {}).clear()
            yield
    finally:
        getattr(op, "_dispatch_cache", {}).clear()
        logger.setLevel(level)


def _onnx_program(scoring: ScoringModel) -> Any:
    """The ``torch.onnx.ONNXProgram`` of the scoring model, batch and sequence length left free.

    The example has two rows of different lengths: export specialises a size-1 axis to the constant 1.
    """
    example = (torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.long), torch.tensor([3, 2], dtype=torch.long))
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
    try:
        with _quiet_fresh_gru_export():
            program = torch.onnx.export(
                scoring, example, dynamo=True, verbose=False, input_names=["item_seq", "item_seq_len"],
                output_names=["scores"], dynamic_shapes=({0: batch, 1: length}, {0: batch}),
            )
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; the user needs one sentence
        raise _onnx_failed(first_line(exc)) from exc
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in program.model_proto.graph.input]
    if dims != [["batch", "length"], ["batch"]]:  # a fixed axis would fail (or mislead) at serving time
        raise _onnx_failed(f"the inputs came out with shapes {dims} instead of [batch, length] and [batch]")
    return program


def _check_onnx_scores(path: Path, scoring: ScoringModel) -> bool:
    """Scores of the written file equal the model's on new shapes (False: no onnxruntime to check with).

    Run before the rename, so a model that runs but scores differently never lands under ``model.onnx``.
    """
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    import onnxruntime

    n = scoring.model.n_items - 1
    lengths = torch.tensor([5, 1, 3], dtype=torch.long)
    seq = (torch.arange(15, dtype=torch.long).view(3, 5) * 7) % n + 1
    seq[torch.arange(5) >= lengths.unsqueeze(1)] = 0
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types; one sentence for the user
        raise _onnx_failed(f"onnxruntime cannot load it: {first_line(exc)}") from exc
    for s, ln in ((seq, lengths), (seq[1:2, :1], lengths[1:2])):
        try:
            got = torch.from_numpy(session.run(None, {"item_seq": s.numpy(), "item_seq_len": ln.numpy()})[0])
        except Exception as exc:  # noqa: BLE001 - as above
            raise _onnx_failed(f"onnxruntime cannot run it on item_seq of shape {list(s.shape)}: "
                               f"{first_line(exc)}") from exc
        with torch.no_grad():
            want = scoring(s, ln)
        if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
            raise _onnx_failed(f"onnxruntime's scores differ from torch's for item_seq of shape {list(s.shape)}")
    return True


def _save_onnx_atomic(program: Any, scoring: ScoringModel, path: Path) -> bool:
    """Write ``model.onnx`` in a temp folder beside it, check it, then rename; returns whether it was checked.

    A model over 2 GB keeps its weights in ``model.onnx.data``, which the graph names by file name, so the
    pair is written under its final names in the temp folder and moved data first, model last.
    """
    tmp_dir = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        program.save(tmp_dir / path.name, external_data=None)  # None: in the file unless over 2 GB
        checked = _check_onnx_scores(tmp_dir / path.name, scoring)
        data = tmp_dir / f"{path.name}.data"
        final_data = path.with_name(data.name)
        external = data.exists()
        if external:  # the same guarantee as io.atomic_path: on disk before it shows under its name
            fsync_path(data)
            os.replace(data, final_data)
        fsync_path(tmp_dir / path.name)
        os.replace(tmp_dir / path.name, path)
        if not external and final_data.exists():
            final_data.unlink()  # an earlier, larger export's weights: this model.onnx holds its own
        return checked
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


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
    # both conversions run in memory first, so a failing one leaves the folder as it was
    if "torchscript" in formats:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still the portable form
            scripted = torch.jit.script(scoring)  # scripted, not traced: batch size and length stay free
    program = _onnx_program(scoring) if "onnx" in formats else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx_meta: dict[str, Any] = {}
    if program is not None:  # first: its onnxruntime check may still fail, and then nothing is written
        checked = _save_onnx_atomic(program, scoring, out / "model.onnx")
        opset = next(o.version for o in program.model_proto.opset_import if o.domain in ("", "ai.onnx"))
        onnx_meta = {"onnx": {"opset": opset, "scores_checked_with_onnxruntime": checked}}
    if "torchscript" in formats:
        with atomic_path(out / "model.ts") as tmp:
            torch.jit.save(scripted, str(tmp))
    weights = io.BytesIO()
    torch.save(model.state_dict(), weights)  # what Recommender.from_export reads (weights only, no code)
    write_bytes_atomic(out / "weights.pt", weights.getvalue())
    write_json_atomic(out / "item_ids.json", list(checkpoint["item_tokens"]))
    write_json_atomic(out / "meta.json", {
        "n_items": model.n_items,
        "max_item_list_length": max_len_of(checkpoint),
        "k": k,
        "formats": formats,
        "inputs": {"item_seq": "[B, L] int64, left-aligned, 0-padded", "item_seq_len": "[B] int64"},
        "output": "scores [B, n_items] float32; column i is item_ids[i]; column 0 (padding) is -inf",
        "model": checkpoint["hyper_parameters"]["model"],
        "item_popularity": checkpoint.get("item_popularity"),  # answers sessions with no known item (or null)
        "source": str(ckpt),
        **onnx_meta,
    })
    return out
