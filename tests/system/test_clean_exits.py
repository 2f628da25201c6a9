"""How the programs end when the end is not theirs to choose: a closed pipe, Ctrl-C while still importing, a name
too long for the filesystem, an input file in another encoding. Exit status and one line, never a traceback."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from narm_lightning.cli.entry import clean_exits
from tests.helpers import REPO, tiny_overrides


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained run's best.ckpt (items i0..i29)."""
    from tests.conftest import write_inter

    root = tmp_path_factory.mktemp("tiny")
    rows = [(f"u{u}", f"i{(u + t) % 30}", float(t)) for u in range(40) for t in range(12)]
    write_inter(root / "tiny" / "tiny.inter", rows)
    run = root / "run"
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *tiny_overrides(root, "epochs=1"),
                           f"hydra.run.dir={run}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run / "checkpoints" / "best.ckpt"


def _recommend(*args: str) -> list[str]:
    return [sys.executable, "-m", "narm_lightning.serving", *args]


def test_a_closed_pipe_ends_the_program_like_cat(checkpoint: Path, tmp_path: Path) -> None:
    """``narm-recommend ... | head -1``: exit 141 (128 + SIGPIPE), nothing on stderr."""
    sessions = tmp_path / "many.txt"
    sessions.write_text("".join(f"i{i % 30} i{(i + 1) % 30}\n" for i in range(20_000)))
    proc = subprocess.Popen(_recommend(f"ckpt={checkpoint}", f"input={sessions}"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().startswith(b"1\t")
    proc.stdout.close()  # what head does after its line
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGPIPE, err.decode()[-2000:]
    assert b"Traceback" not in err and b"BrokenPipeError" not in err


@pytest.mark.parametrize(("content", "message"), [
    ("i1 i2\n\xe9i3\n".encode("latin-1"), "many.txt, line 2: is not UTF-8 text (byte 0)"),
    ("i1 i2\n".encode("utf-16"), "many.txt, line 1: is not UTF-8 text (byte 0) (it starts with a UTF-16 byte-order "
                                 "mark: iconv -f UTF-16 -t UTF-8 converts it)"),
])
def test_an_input_file_in_another_encoding_is_one_paragraph(checkpoint, tmp_path, content, message) -> None:
    sessions = tmp_path / "many.txt"
    sessions.write_bytes(content)
    out = tmp_path / "recs.tsv"
    proc = subprocess.run(_recommend(f"ckpt={checkpoint}", f"input={sessions}", f"output={out}"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"error: {sessions.parent / message}" in proc.stderr
    assert not out.exists()  # nothing half-written


def test_a_dataset_name_too_long_for_the_filesystem_is_one_paragraph(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), f"data.dataset={'d' * 300}", "logger=none"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "a file or folder name longer than the filesystem allows (255 bytes a name)" in proc.stderr
    assert "dddddd...ddd" in proc.stderr and " characters): " in proc.stderr  # the path named briefly
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").iterdir())


def _mapped(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _ctrl_c_once_torch_loads(command: list[str], cwd: Path, ended: int) -> str:
    """Run ``command``, send SIGINT once torch's library is mapped (it is still importing), and return stderr
    after asserting exit 130 and no traceback; skipped when the program ended on its own first (``ended``)."""
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=cwd)
    try:
        deadline = time.monotonic() + 120  # a guard against a hang, not a timing assertion
        while not _mapped(proc.pid, "libtorch_cpu") and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, "the program ended before torch was ever loaded"
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    if proc.returncode == ended:
        pytest.skip("the imports finished before the signal came")
    assert proc.returncode == 128 + signal.SIGINT and "Traceback" not in err, err[-2000:]
    return err


def test_ctrl_c_while_importing_is_one_line_and_exit_130(tiny_root: Path, tmp_path: Path) -> None:
    """SIGINT once torch's library is mapped, while a run is still importing torch and Lightning (seconds; the
    programs load them only once the config has composed, so ``--help`` and a typo never do): exit 130 and one
    line, not a page of import frames. Should the run end first (exit 0), the signal came too late to test
    anything."""
    command = [sys.executable, str(REPO / "train.py"), *tiny_overrides(tiny_root, "epochs=1"),
               f"hydra.run.dir={tmp_path / 'run'}"]
    assert "stopped by SIGINT" in _ctrl_c_once_torch_loads(command, tmp_path, ended=0)


def test_ctrl_c_while_the_recommender_imports_torch_is_one_line_and_exit_130(tmp_path: Path) -> None:
    """``python -m narm_lightning.serving``: the package no longer imports torch before the program's handling
    exists (every Ctrl-C in that second was a page of import frames and a death by SIGINT)."""
    command = _recommend(f"ckpt={tmp_path / 'none.ckpt'}", "input=-")
    assert "interrupted (SIGINT)" in _ctrl_c_once_torch_loads(command, tmp_path, ended=2)


def test_clean_exits_turns_the_two_ends_into_exit_codes(capsys) -> None:
    with pytest.raises(SystemExit) as info, clean_exits():
        raise KeyboardInterrupt
    assert info.value.code == 130 and "interrupted (SIGINT)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info, clean_exits():
        raise BrokenPipeError
    assert info.value.code == 141


def test_sigterm_before_training_leaves_no_run_folder(tmp_path: Path) -> None:
    """A scheduler's SIGTERM in the first seconds (importing, composing, reading data): exit 143, one line, and the
    run folder Hydra began (``.hydra/``, ``train.log``) removed; the default action left it behind."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), "logger=none", f"hydra.run.dir={run}",
                             f"data.root={tmp_path / 'none'}", "data.extra_roots=[]"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120  # a guard against a hang, not a timing assertion
        while not (run / ".hydra").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)  # the event: Hydra has made the folder; torch and Lightning begin to import
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()  # never left training after a failed assertion (a lost signal once trained on here)
    if proc.returncode == 2:  # the signal came after the run refused its data (no network to fetch it)
        pytest.skip("the run ended on its own before the signal")
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Traceback" not in err and "stopped by SIGTERM before any epoch was saved" in err
    assert not run.exists()


@pytest.fixture
def early_handlers() -> Iterator[None]:
    """The programs' handlers of the time before training, in this process, put back afterwards."""
    from narm_lightning.cli import entry

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    entry.stop_on_signals_until_lightning()
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
        entry._deferred.clear()


def _import_module_that_signals(tmp_path: Path, name: str, *signums: int) -> object:
    """Import a fresh module whose body sends this process ``signums`` and then runs on."""
    kills = "".join(f"os.kill(os.getpid(), {int(s)})\n" for s in signums)
    (tmp_path / f"{name}.py").write_text(f"import os\n{kills}for _ in range(1000):\n    pass\nREACHED = True\n")
    sys.path.insert(0, str(tmp_path))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_inside_an_import_stops_the_run_once_the_import_returns(early_handlers, tmp_path, signum) -> None:
    """Raised inside a module's body, the stop would be that module's import failing: numpy's lazy imports
    turned it into a RecursionError, extensions into "cannot load module more than once", and one run trained on.
    So the import completes, and the run stops where it returned, with the signal's exit status."""
    from narm_lightning.cli.entry import raise_if_stopped
    from narm_lightning.errors import RunInterrupted

    module = _import_module_that_signals(tmp_path, f"signals_{int(signum)}", signum)
    assert module.REACHED
    with pytest.raises(RunInterrupted) as info:
        raise_if_stopped()
    assert info.value.exit_code == 128 + signum and f"stopped by {signal.Signals(signum).name}" in str(info.value)
    raise_if_stopped()  # raised once: nothing left pending


def test_a_signal_outside_imports_stops_at_once_and_a_second_one_inside(early_handlers, tmp_path) -> None:
    from narm_lightning.errors import RunInterrupted

    with pytest.raises(RunInterrupted) as info:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs at the next bytecode boundary
            pass
    assert info.value.exit_code == 143
    with pytest.raises(RunInterrupted):  # pressed twice: a hung import is not waited for
        _import_module_that_signals(tmp_path, "signals_twice", signal.SIGINT, signal.SIGINT)


def test_the_other_programs_take_ctrl_c_in_their_first_import_once_it_returns(tmp_path) -> None:
    """``narm-sweep`` and ``narm-recommend`` around their entry's import (torch, for narm-recommend): the import
    completes, ``KeyboardInterrupt`` comes at the block's end, and the handler before it is back."""
    from narm_lightning.cli.entry import ctrl_c_after_imports

    before = signal.getsignal(signal.SIGINT)
    reached = []
    with pytest.raises(KeyboardInterrupt), ctrl_c_after_imports():
        reached.append(_import_module_that_signals(tmp_path, "ctrl_c_once", signal.SIGINT).REACHED)
    assert reached == [True] and signal.getsignal(signal.SIGINT) is before
    with ctrl_c_after_imports():  # nothing noted: nothing raised
        pass
    with pytest.raises(KeyboardInterrupt), ctrl_c_after_imports():  # outside an import: at once
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):
            pass
        reached.append("after")
    assert reached == [True]
    assert signal.getsignal(signal.SIGINT) is before


def test_training_gets_the_default_handlers_after_a_deferred_signal_is_raised(early_handlers) -> None:
    from narm_lightning.cli import entry
    from narm_lightning.errors import RunInterrupted

    entry._deferred.add(signal.SIGTERM)
    with pytest.raises(RunInterrupted):
        entry.hand_signals_to_lightning()
    entry.hand_signals_to_lightning()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _tunables_seen(env_extra: dict[str, str]) -> str:
    code = ("from narm_lightning.cli.entry import with_heap_tunables; with_heap_tunables(); "
            "import os; print(os.environ.get('GLIBC_TUNABLES', '<unset>'))")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "NARM_KEEP_ENV")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**env, **env_extra})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


def test_the_programs_give_themselves_the_heap_tunables() -> None:
    """A plain ``python train.py`` (no GLIBC_TUNABLES) restarts itself once with them, before torch loads; the
    user's own values are kept, and NARM_KEEP_ENV=1 leaves the environment alone."""
    from narm_lightning.training.hostcheck import RECOMMENDED_TUNABLES, slow_allocation_advice

    assert _tunables_seen({}) == ":".join(RECOMMENDED_TUNABLES)
    kept = _tunables_seen({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0:glibc.malloc.arena_max=2"})
    assert kept.split(":") == ["glibc.malloc.hugetlb=0", "glibc.malloc.arena_max=2", *RECOMMENDED_TUNABLES]
    assert "hugetlb" not in _tunables_seen({}), "no huge pages: their first touch costs the first epoch 2.8 s"
    assert _tunables_seen({"NARM_KEEP_ENV": "1"}) == "<unset>"
    # what the restart gives is what the speed advice asks for: no advice is printed after it
    assert slow_allocation_advice("madvise", {"GLIBC_TUNABLES": ":".join(RECOMMENDED_TUNABLES)}) is None
