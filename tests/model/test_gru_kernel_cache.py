"""The fused GRU's kernels skip inductor's per-process vector-ISA probe (~1.4 s of every process's first epoch)
once it passed on this host: a marker file keyed by torch, CPU capability and compiler (issue 36, first epoch)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from narm_lightning.model import gru


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path


def _spy(monkeypatch, fail_with_isa_ok: bool = False) -> list[dict[str, Any]]:
    """torch.compile replaced by a recorder of its options; the 'compiled' function is the eager one (or raises
    when asked to trust the ISA and ``fail_with_isa_ok``)."""
    seen: list[dict[str, Any]] = []

    def compile_(fn, fullgraph, options):  # noqa: ANN001, ANN202
        seen.append(dict(options))
        if fail_with_isa_ok and options.get("cpp.vec_isa_ok"):
            def broken(*args):  # noqa: ANN002, ANN202
                raise RuntimeError("C++ compile error: -mavx512f not supported")
            return broken
        return fn

    monkeypatch.setattr(torch, "compile", compile_)
    return seen


def test_the_first_process_probes_then_records_it_and_the_next_trusts_it(cache, monkeypatch) -> None:
    seen = _spy(monkeypatch)
    marker = gru.isa_probe_marker()
    assert marker.parent == cache / "narm-lightning" and not marker.exists()
    first = gru._Kernels({"double": lambda x: x * 2})
    assert torch.equal(first("double", torch.ones(2)), torch.full((2,), 2.0))
    assert len(seen) == 1 and "cpp.vec_isa_ok" not in seen[0] and marker.exists()  # probed as torch does, recorded
    second = gru._Kernels({"double": lambda x: x * 2})
    second("double", torch.ones(2))
    assert seen[1] == {**seen[0], "cpp.vec_isa_ok": True}
    # no per-process check of inductor's precompiled header (a preprocessor run and a hash in every process)
    assert all(options["cpp_cache_precompile_headers"] is False for options in seen)


def test_a_marker_that_no_longer_holds_is_dropped_and_the_kernels_probe_again(cache, monkeypatch) -> None:
    seen = _spy(monkeypatch, fail_with_isa_ok=True)
    marker = gru.isa_probe_marker()
    marker.parent.mkdir(parents=True)
    marker.write_text("ok\n")
    kernels = gru._Kernels({"double": lambda x: x * 2})
    assert torch.equal(kernels("double", torch.ones(2)), torch.full((2,), 2.0))
    assert [o.get("cpp.vec_isa_ok") for o in seen] == [True, None] and not kernels.failed
    assert marker.exists()  # the retry probed and passed: recorded again


def test_the_marker_is_keyed_by_torch_cpu_capability_and_compiler(cache, monkeypatch) -> None:
    here = gru.isa_probe_marker()
    assert gru.isa_probe_marker() == here
    capability = torch.backends.cpu.get_cpu_capability()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: f"not {capability}")
    assert gru.isa_probe_marker() != here
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setenv("CXX", "/opt/other/g++")
    assert gru.isa_probe_marker() != here
    monkeypatch.delenv("CXX")
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    assert gru.isa_probe_marker() != here


def test_an_unwritable_cache_folder_only_means_probing_again(tmp_path, monkeypatch) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    seen = _spy(monkeypatch)
    kernels = gru._Kernels({"double": lambda x: x * 2})
    kernels("double", torch.ones(2))
    kernels("double", torch.ones(2))
    assert len(seen) == 1 and not kernels.failed
