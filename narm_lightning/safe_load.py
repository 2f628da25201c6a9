"""Reading files that may hold pickles (checkpoints, SR-GNN splits) so that nothing named in them can run.

A pickle names importable callables and has them called on load (``os.system`` included), and torch
accepts two containers for one: its zip format and the legacy raw-pickle format, whose header is itself
read with the pickle module it is given. So every file here is read by an unpickler that looks a name up
only in an explicit table and refuses any other, before anything is imported or called:

* ``load_torch_checkpoint``: our own ``.ckpt`` files, through torch's weights-only unpickler (tensors,
  plain containers, dtypes), asked for explicitly, so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot turn it
  off (torch honours that variable only where a caller leaves ``weights_only`` unset).
* ``load_torch_restricted``: a torch file whose pickle names classes of another code base (RecBole's);
  the caller's table maps each allowed name to a stand-in, the rest is refused.
* ``load_plain_pickle``: lists, tuples, dicts and numbers only (the SR-GNN/NARM split pickles).
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import types
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import torch

from narm_lightning.errors import ConfigError, DataError, first_line
from narm_lightning.io import require_regular_file

Allowed = Mapping[tuple[str, str], Any]

# What torch's own files need to rebuild tensors: the zip format's storages are resolved by torch before
# find_class is asked (names containing "Storage"), so only these rebuilders and containers remain.
# Private API: the rebuilders are the names torch writes into its pickles (torch.save), so an allow-list of what a
# file may name must hold them; torch's public weights_only loader allows the same ones. tests/system/
# test_private_apis.py fails when torch renames them.
TORCH_REBUILDERS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch", "device"): torch.device,
}

_UNPICKLING_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
                      AttributeError, MemoryError, OverflowError, UnicodeDecodeError, RuntimeError,
                      ImportError, struct.error)


class RefusedClass(DataError):
    """A file names a class or function that its reader does not allow; nothing was imported or run."""


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the names in ``allowed``; any other global is a ``RefusedClass`` error.

    ``path`` is only for the message. Torch subclasses this (its ``pickle_module.Unpickler``) and adds its
    own storage handling; every other name still reaches ``find_class`` here.
    """

    allowed: Allowed = {}
    path: str = "<file>"
    what: str = "this file"

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except (KeyError, TypeError):
            raise RefusedClass(
                f"{self.path}: the file tries to load the class or function {module}.{name}, which {self.what} "
                "never holds; refused, nothing in the file was imported or run."
            ) from None


def restricted_pickle_module(allowed: Allowed, path: str | Path, what: str) -> types.ModuleType:
    """A stand-in for the ``pickle`` module, for ``torch.load(pickle_module=...)``.

    Both of its entry points go through ``RestrictedUnpickler``: torch's zip reader subclasses
    ``Unpickler``, and its legacy reader calls ``load`` for the file's header records as well.
    """
    class Unpickler(RestrictedUnpickler):
        pass

    Unpickler.allowed, Unpickler.path, Unpickler.what = dict(allowed), str(path), what

    def load(file: IO[bytes], **kwargs: Any) -> Any:
        return Unpickler(file, **kwargs).load()

    module = types.ModuleType("narm_restricted_pickle")
    module.Unpickler = Unpickler  # type: ignore[attr-defined]
    module.load = load  # type: ignore[attr-defined]
    return module


def _unreadable(path: Path, what: str, exc: BaseException) -> DataError:
    return DataError(f"{path}: not a readable {what} (truncated or corrupt: {first_line(exc)}).")


def _guarded(path: Path, what: str, read: Callable[[], Any]) -> Any:
    try:
        return read()
    except DataError:
        raise
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" not in text:
            raise _unreadable(path, what, exc) from None
        # torch's weights-only unpickler stopped: at a name it does not allow, or at bytes it cannot parse
        body = text.split("trusted source.", 1)[-1].split("WeightsUnpickler error:", 1)[-1]
        # its first sentence: the rest advises add_safe_globals, i.e. trusting the file
        detail = " ".join(body.split("Check the documentation")[0].split()).split(". ")[0].rstrip(".")
        if any(mark in detail for mark in ("GLOBAL", "Unsupported global", "Unsupported class")):
            raise RefusedClass(
                f"{path}: the file asks for something a {what} never holds (torch's weights-only reader: "
                f"{detail[:200]}); refused, nothing in the file was imported or run."
            ) from None
        raise DataError(f"{path}: not a readable {what} (torch's weights-only reader: {detail[:200]}); nothing in "
                        "the file was run.") from None
    except (*_UNPICKLING_ERRORS, OSError) as exc:
        raise _unreadable(path, what, exc) from None


def init_from_file(path: str) -> Path:
    """The file ``init_from`` names, or the ``ConfigError`` that says what it should be: checked before Lightning
    loads (``cli/apps.refuse_bad_config``) and again where the weights are read."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"init_from={path}: no such file; expected a narm-lightning .ckpt or a RecBole .pth.")
    return file


def load_torch_checkpoint(path: str | Path, what: str = "narm-lightning checkpoint") -> Any:
    """A file written with ``torch.save`` of tensors and plain data, read by torch's weights-only unpickler."""
    path = require_regular_file(path, f"a {what}")
    with warnings.catch_warnings():  # torch's note on an unusual pickle protocol: noise beside our refusal
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        return _guarded(path, what, lambda: torch.load(path, map_location="cpu", weights_only=True))


def load_torch_restricted(path: str | Path, allowed: Allowed, what: str) -> Any:
    """A ``torch.save`` file whose pickle may name only ``allowed`` (plus torch's tensor rebuilders)."""
    path = require_regular_file(path, f"a {what}")
    module = restricted_pickle_module({**TORCH_REBUILDERS, **allowed}, path, f"a {what}")
    return _guarded(path, what, lambda: torch.load(path, map_location="cpu", pickle_module=module,
                                                   weights_only=False))


def load_plain_pickle(path: str | Path, what: str = "pickle") -> Any:
    """A pickle of plain data only (lists, tuples, dicts, ints, floats, strings): every class is refused."""
    path = require_regular_file(path, f"a {what}")
    data = path.read_bytes()
    module = restricted_pickle_module({}, path, "a pickle of plain lists and ints")
    unpickler = module.Unpickler(io.BytesIO(data))  # type: ignore[attr-defined]
    unpickler.persistent_load = _no_external(path)
    return _guarded(path, what, unpickler.load)


def _no_external(path: Path) -> Callable[[Any], Any]:
    def refuse(pid: Any) -> Any:
        raise RefusedClass(f"{path}: the pickle refers to an external object ({pid!r}); expected only plain "
                           "lists, tuples and ints.")

    return refuse
