"""No file we read runs code: raw-pickle and torch-zip payloads through every reader that may unpickle.

Each payload would create a marker file if anything in it were called. Every entry point must refuse it
with one of our errors naming the file, also with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` set (RecBole users
set it), and the marker must not exist afterwards.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from narm_lightning.data.session_files import read_pickle_split
from narm_lightning.errors import ConfigError, DataError, NarmError
from narm_lightning.model.narm import NARM
from narm_lightning.recbole.checkpoint import load_recbole_state_dict
from narm_lightning.safe_load import load_plain_pickle, load_torch_checkpoint
from narm_lightning.serving.recommender import Recommender
from narm_lightning.training.builders import load_initial_weights
from narm_lightning.training.checkpointing import AtomicCheckpointIO
from tests.helpers import REPO, tiny_overrides


class _System:
    """Pickles as ``os.system(<touch marker>)``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Exec:
    """Pickles as ``exec(<write marker>)``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('x')",))


def _raw_pickle(path: Path, marker: Path) -> Path:
    """What the issue reproduced: a plain pickle (torch's legacy format reads its header with pickle)."""
    path.write_bytes(pickle.dumps(_System(marker)))
    return path


def _raw_pickle_in_a_checkpoint(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({"state_dict": {"w": 1}, "x": _Exec(marker)}, protocol=2))
    return path


def _torch_zip(path: Path, marker: Path) -> Path:
    """A real torch zip checkpoint whose pickle also names ``os.system``."""
    torch.save({"state_dict": {"model.w": torch.ones(2)}, "hyper_parameters": {}, "evil": _System(marker)}, path)
    return path


def _torch_legacy(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {"w": torch.ones(2)}, "evil": _Exec(marker)}, path,
               _use_new_zipfile_serialization=False)
    return path


PAYLOADS: dict[str, Callable[[Path, Path], Path]] = {
    "raw-pickle": _raw_pickle, "raw-pickle-dict": _raw_pickle_in_a_checkpoint,
    "torch-zip": _torch_zip, "torch-legacy": _torch_legacy,
}


def _readers() -> dict[str, Callable[[Path], object]]:
    def init_from(path: Path) -> object:
        from narm_lightning.model.losses import build_loss
        from narm_lightning.model.module import NARMModule

        module = NARMModule(NARM(5), build_loss("CE", 5, None), learner="adam", learning_rate=1e-3,
                            weight_decay=0.0, topk=[1], metrics=["Recall"], model_config={})
        return load_initial_weights(module, str(path))

    def export_folder(path: Path) -> object:
        folder = path.parent / "export"
        folder.mkdir()
        path.rename(folder / "weights.pt")
        (folder / "meta.json").write_text(json.dumps({"model": {"n_items": 5}, "max_item_list_length": 5}))
        (folder / "item_ids.json").write_text(json.dumps(["[PAD]", "a", "b", "c", "d"]))
        return Recommender.from_export(folder)

    def session_split(path: Path) -> object:
        path.rename(path.parent / "train.txt")
        (path.parent / "test.txt").write_bytes(pickle.dumps(([[1]], [2])))
        return read_pickle_split(path.parent)

    return {
        "init_from": init_from,
        "resume last.ckpt (Lightning's CheckpointIO)": lambda p: AtomicCheckpointIO().load_checkpoint(p),
        "recommender ckpt": Recommender.from_checkpoint,
        "export folder": export_folder,
        "RecBole .pth": load_recbole_state_dict,
        "session pickle split": session_split,
        "any checkpoint": load_torch_checkpoint,
    }


@pytest.mark.parametrize("force_unsafe", [False, True], ids=["env-default", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1"])
@pytest.mark.parametrize("payload", list(PAYLOADS))
@pytest.mark.parametrize("reader", list(_readers()))
def test_every_reader_refuses_every_payload(tmp_path, monkeypatch, reader, payload, force_unsafe) -> None:
    if force_unsafe:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned.txt"
    path = PAYLOADS[payload](tmp_path / "evil.pth", marker)
    with pytest.raises(NarmError, match=r"evil\.pth|weights\.pt|train\.txt"):
        _readers()[reader](path)
    assert not marker.exists(), f"{reader} ran code from a {payload} file"


def test_the_refusal_names_the_class_and_says_nothing_ran(tmp_path) -> None:
    marker = tmp_path / "pwned.txt"
    path = _raw_pickle(tmp_path / "e.pth", marker)
    with pytest.raises(DataError, match=r"e\.pth: the file tries to load the class or function (posix|os)\.system"
                                        r".*refused, nothing in the file was imported or run"):
        load_recbole_state_dict(path)
    with pytest.raises(DataError, match=r"e\.pth: not a readable narm-lightning checkpoint .*nothing in the file "
                                        "was run"):
        load_torch_checkpoint(path)
    torch.save({"x": _System(marker)}, path)
    with pytest.raises(DataError, match=r"e\.pth: the file asks for something a narm-lightning checkpoint never "
                                        r"holds \(torch's weights-only reader: .*GLOBAL (posix|os)\.system"):
        load_torch_checkpoint(path)


def test_the_command_line_of_the_issue(tiny_root, tmp_path) -> None:
    """``python train.py init_from=e.pth epochs=0`` with the issue's payload, on data that loads (so the program
    reaches the file): exit 2, one paragraph naming the file, no marker."""
    marker = tmp_path / "pwned.txt"
    evil = _raw_pickle(tmp_path / "e.pth", marker)
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *tiny_overrides(tiny_root), f"init_from={evil}",
                           "epochs=0", f"hydra.run.dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert not marker.exists()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"error: init_from={evil}: " in proc.stderr and "Nothing in the file was run." in proc.stderr


def _config_file_run(tiny_root: Path, tmp_path: Path, text: str, env: dict[str, str] | None = None
                     ) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "recbole.yaml"
    config.write_text(text)
    return subprocess.run([sys.executable, str(REPO / "train.py"), *tiny_overrides(tiny_root), f"config_file={config}",
                           "epochs=1", f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env={**os.environ, **(env or {})})


def test_a_config_file_cannot_read_the_environment(tiny_root, tmp_path) -> None:
    """The red-team's ``data_path: "/x/${oc.env:MY_SECRET_TOKEN}/../data"``: refused naming the key; the secret is
    nowhere (not in the message, not in a file)."""
    proc = _config_file_run(tiny_root, tmp_path, 'data_path: "/x/${oc.env:MY_SECRET_TOKEN}/../data"\n',
                            {"MY_SECRET_TOKEN": "hunter2-secret"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "recbole.yaml: data_path holds '/x/${oc.env:MY_SECRET_TOKEN}/../data', an OmegaConf interpolation" in (
        proc.stderr)
    assert "hunter2-secret" not in proc.stdout + proc.stderr
    assert not (tmp_path / "run").exists()
    # every other resolver too, in keys and nested values: refused by the same reader the program calls (one
    # program run above shows the refusal reaches the console as exit 2; three more would add 15 s, nothing else)
    from narm_lightning.recbole.config import read_recbole_file

    for text, key in (("USER_ID_FIELD: ${now:%H}\n", "USER_ID_FIELD"), ("topk: [10, '${oc.decode:1}']\n", "topk[1]"),
                      ("'${oc.env:HOME}': 1\n", "${oc.env:HOME}")):
        (tmp_path / "recbole.yaml").write_text(text)
        with pytest.raises(ConfigError, match=re.escape(f"{key} holds ") + ".*an OmegaConf interpolation"):
            read_recbole_file(tmp_path / "recbole.yaml")


def test_a_yaml_alias_bomb_is_refused_at_once(tiny_root, tmp_path) -> None:
    """A 1 KB billion-laughs config file: refused before it is expanded (the red-team saw 151 s), exit 2."""
    lines, previous = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'], "a0"
    for level in range(1, 9):
        lines.append(f"a{level}: &a{level} [" + ",".join([f"*{previous}"] * 9) + "]")
        previous = f"a{level}"
    proc = _config_file_run(tiny_root, tmp_path, "\n".join(lines) + "\n")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "its aliases expand to more than" in proc.stderr and "Traceback" not in proc.stderr


def test_allowed_files_still_load(tmp_path) -> None:
    """The refusals are not blanket: plain data, our checkpoints and RecBole-shaped files load."""
    plain = tmp_path / "train.txt"
    plain.write_bytes(pickle.dumps(([[1, 2], [3]], [3, 4])))
    assert load_plain_pickle(plain) == ([[1, 2], [3]], [3, 4])
    ours = tmp_path / "ok.ckpt"
    torch.save({"state_dict": {"model.w": torch.ones(2)}, "epoch": 3}, ours)
    assert load_torch_checkpoint(ours)["epoch"] == 3


def test_a_plain_pickles_refusals_name_the_file_and_what_it_should_hold(tmp_path) -> None:
    """Each way a session pickle is refused, word for word: an empty file, a class, an external (persistent)
    object, a cut file."""
    import io as _io

    path = tmp_path / "train.txt"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=rf"^{path}: file is empty; expected a pickle$"):
        load_plain_pickle(path)
    path.write_bytes(pickle.dumps(([[1, 2]], [_System(tmp_path / "m")])))
    with pytest.raises(DataError, match=r"the class or function (posix|os)\.system, which a pickle of plain lists "
                                        r"and ints never holds; refused, nothing in the file was imported or run\.$"):
        load_plain_pickle(path)

    class External(pickle.Pickler):
        def persistent_id(self, obj):  # noqa: ANN001, ANN202 - pickle's own hook
            return "blob-1" if obj == "external" else None

    buffer = _io.BytesIO()
    External(buffer).dump([[1, 2], "external"])
    path.write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match=rf"^{path}: the pickle refers to an external object \('blob-1'\); expected "
                                        r"only plain lists, tuples and ints\.$"):
        load_plain_pickle(path)
    path.write_bytes(pickle.dumps([[1, 2], [3]])[:-3])
    with pytest.raises(DataError, match=rf"^{path}: not a readable split pickle \(truncated or corrupt: "):
        load_plain_pickle(path, "split pickle")


# ---- from the mutation run of safe_load.py (docs/reliability.md): torch's refusal, shaped into one paragraph ----

TORCH_PREAMBLE = (
    "Weights only load failed. This file can still be loaded, to do so you have two options, \x1b[1mdo those steps "
    "only if you trust the source of the checkpoint\x1b[0m. \n\t(1) In PyTorch 2.6, we changed the default value of "
    "the `weights_only` argument in `torch.load` from `False` to `True`. Re-running `torch.load` with `weights_only` "
    "set to `False` will likely succeed, but it can result in arbitrary code execution. Do it only if you got the "
    "file from a trusted source.\n\t(2) Alternatively, to load with `weights_only=True` please check the recommended "
    "steps in the following error message.\n\tWeightsUnpickler error: ")


def _refusal(detail: str) -> str:
    """torch's message: a refused global or class comes with advice to trust it, a parse error without."""
    advice = (" Please use `torch.serialization.add_safe_globals([x])` to allowlist this global if you trust this "
              "class/function." if detail.startswith("Unsupported g") else "")
    return (TORCH_PREAMBLE + detail + advice + "\n\nCheck the documentation of torch.load to learn more about types "
            "accepted by default with weights_only https://pytorch.org/docs/stable/generated/torch.load.html.")


@pytest.mark.parametrize(("detail", "refused", "shown"), [
    ("Unsupported global: GLOBAL os.system was not an allowed global by default.", True,
     "Unsupported global: GLOBAL os.system was not an allowed global by default"),
    ("Unsupported class numpy.core.multiarray._reconstruct.", True,
     "Unsupported class numpy.core.multiarray._reconstruct"),
    ("Unsupported operand 110", False, "Unsupported operand 110"),
    ("Trying to call  reduce\n for   x. More.", False, "Trying to call reduce for x"),
    # a name from the file that repeats torch's own markers is shown as it is, not cut at the repeat
    ("Unsupported global: GLOBAL evil.trusted source.WeightsUnpickler error: x.y was not an allowed global by "
     "default.", True, "Unsupported global: GLOBAL evil.trusted source.WeightsUnpickler error: x.y was not an "
     "allowed global by default"),
    # torch's older wording, without the opcode's name
    ("Unsupported global: os.system.", True, "Unsupported global: os.system"),
    ("Unsupported operand XX.", False, "Unsupported operand XX"),
])
def test_torchs_refusal_becomes_one_sentence_naming_the_file(tmp_path: Path, detail: str, refused: bool,
                                                             shown: str) -> None:
    from narm_lightning.safe_load import RefusedClass, _guarded

    def read() -> None:
        raise pickle.UnpicklingError(_refusal(detail))

    with pytest.raises(DataError) as exc:
        _guarded(tmp_path / "f.pt", "weights file", read)
    assert isinstance(exc.value, RefusedClass) is refused
    if refused:
        assert str(exc.value) == (f"{tmp_path / 'f.pt'}: the file asks for something a weights file never holds "
                                  f"(torch's weights-only reader: {shown}); refused, nothing in the file was imported "
                                  "or run.")
    else:
        assert str(exc.value) == (f"{tmp_path / 'f.pt'}: not a readable weights file (torch's weights-only reader: "
                                  f"{shown}); nothing in the file was run.")


def test_a_long_refusal_is_cut_at_200_characters_and_other_unpickling_errors_are_corrupt_files(tmp_path) -> None:
    from narm_lightning.safe_load import _guarded

    def long() -> None:
        raise pickle.UnpicklingError(_refusal("Unsupported operand " + "x" * 300))

    with pytest.raises(DataError) as exc:
        _guarded(tmp_path / "f.pt", "weights file", long)
    assert f"reader: Unsupported operand {'x' * 180}); nothing" in str(exc.value)

    def cut() -> None:
        raise pickle.UnpicklingError("pickle data was truncated\nmore")

    with pytest.raises(DataError) as exc:
        _guarded(tmp_path / "f.pt", "weights file", cut)
    assert str(exc.value) == (f"{tmp_path / 'f.pt'}: not a readable weights file (truncated or corrupt: "
                              "UnpicklingError: pickle data was truncated).")


def test_a_folder_given_as_a_torch_file_is_named_as_what_was_expected(tmp_path: Path) -> None:
    from narm_lightning.safe_load import load_torch_checkpoint, load_torch_restricted

    with pytest.raises(DataError, match=r"is a directory; expected a weights file$"):
        load_torch_checkpoint(tmp_path, "weights file")
    with pytest.raises(DataError, match=r"is a directory; expected a session split$"):
        load_torch_restricted(tmp_path, {}, "session split")


def test_a_refused_name_is_cut_at_200_characters_and_other_errors_name_their_kind(tmp_path) -> None:
    from narm_lightning.safe_load import _guarded

    def long() -> None:
        raise pickle.UnpicklingError(_refusal("Unsupported global: GLOBAL " + "x" * 300))

    with pytest.raises(DataError) as exc:
        _guarded(tmp_path / "f.pt", "weights file", long)
    assert f"(torch's weights-only reader: Unsupported global: GLOBAL {'x' * 173}); refused" in str(exc.value)

    def empty() -> None:
        raise EOFError("Ran out of input")

    with pytest.raises(DataError) as exc:
        _guarded(tmp_path / "f.pt", "weights file", empty)
    assert str(exc.value) == (f"{tmp_path / 'f.pt'}: not a readable weights file (truncated or corrupt: "
                              "EOFError: Ran out of input).")


def test_torchs_message_without_its_usual_preamble_still_reads(tmp_path) -> None:
    """Another torch version's wording: the detail after its marker is still the sentence shown."""
    from narm_lightning.safe_load import _guarded

    def read() -> None:
        raise pickle.UnpicklingError("Weights only load failed. WeightsUnpickler error: Unsupported operand 7")

    with pytest.raises(DataError) as exc:
        _guarded(tmp_path / "f.pt", "weights file", read)
    assert str(exc.value) == (f"{tmp_path / 'f.pt'}: not a readable weights file (torch's weights-only reader: "
                              "Unsupported operand 7); nothing in the file was run.")


def test_the_loaders_read_onto_the_cpu_and_say_how_they_unpickle(tmp_path, monkeypatch) -> None:
    """A checkpoint written on a GPU host must load on a CPU-only one (map_location), ours weights-only, a RecBole
    file through the restricted module with weights_only=False said outright (so TORCH_FORCE_WEIGHTS_ONLY_LOAD
    cannot turn it into torch's refusal of an explicit pickle_module)."""
    import torch

    from narm_lightning import safe_load

    path = tmp_path / "t.pt"
    torch.save({"w": torch.ones(2)}, path)
    calls: list[dict] = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    safe_load.load_torch_checkpoint(path)
    safe_load.load_torch_restricted(path, {}, "weights file")
    assert calls[0] == {"map_location": "cpu", "weights_only": True}
    assert calls[1]["map_location"] == "cpu" and calls[1]["weights_only"] is False
    assert calls[1]["pickle_module"].__name__ == "narm_restricted_pickle"


def test_torchs_note_on_an_unusual_pickle_protocol_is_not_shown(tmp_path) -> None:
    import warnings

    import torch

    from narm_lightning.safe_load import load_torch_checkpoint

    path = tmp_path / "p3.pt"
    torch.save({"w": torch.ones(2)}, path, pickle_protocol=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(load_torch_checkpoint(path)["w"], torch.ones(2))
