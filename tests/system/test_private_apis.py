"""Each private or internal API the package leans on, where no public one exists (issue 34): a test a name, which
fails loudly, naming the site, when a new torch, Hydra or Optuna renames or reshapes it."""

from __future__ import annotations

import importlib
import inspect
import logging
from pathlib import Path

import optuna
import pytest
import torch

PACKAGE = Path(__file__).resolve().parents[2] / "narm_lightning"


def test_torch_still_has_the_dynamo_recompile_limit_the_fused_gru_raises() -> None:
    """model/gru.py: ``torch._dynamo.config.patch(recompile_limit=...)``."""
    from narm_lightning.model.gru import RECOMPILE_LIMIT, _Kernels

    assert isinstance(torch._dynamo.config.recompile_limit, int)
    with _Kernels.limits():
        assert torch._dynamo.config.recompile_limit == RECOMPILE_LIMIT


def test_torch_still_pickles_tensors_through_the_rebuilders_safe_load_allows(tmp_path) -> None:
    """safe_load.py: the allow-list names ``torch._utils._rebuild_*``, the names torch.save writes."""
    import pickletools

    from narm_lightning.safe_load import TORCH_REBUILDERS

    for (module, name), target in TORCH_REBUILDERS.items():
        assert getattr(importlib.import_module(module), name) is target, (module, name)
    import zipfile

    path = tmp_path / "t.pt"
    torch.save({"w": torch.nn.Parameter(torch.ones(2)), "t": torch.zeros(3)}, path)
    with zipfile.ZipFile(path) as archive:
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    names = {arg for op, arg, _ in pickletools.genops(pickled) if op.name == "GLOBAL"}
    rebuilders = {f"torch._utils {n}" for (m, n) in TORCH_REBUILDERS if m == "torch._utils"}
    assert {n for n in names if n.startswith("torch._utils ")} <= rebuilders and names & rebuilders, names


def test_hydras_basic_launcher_still_logs_under_the_name_the_sweeper_quiets() -> None:
    """sweeping/sweeper.py quiets ``hydra._internal.core_plugins.basic_launcher``'s logger (its job dumps)."""
    from narm_lightning.sweeping.sweeper import LAUNCHER_LOGGER

    module = importlib.import_module(LAUNCHER_LOGGER)
    assert module.log.name == LAUNCHER_LOGGER
    assert isinstance(module.log, logging.Logger)


def test_optuna_still_builds_a_trial_from_its_storage_id() -> None:
    """sweeping/pruning.py and trials.py: ``optuna.trial.Trial(study, trial_id)`` reaches a trial another process
    asked; report() and should_prune() then work on it."""
    assert list(inspect.signature(optuna.trial.Trial).parameters)[:2] == ["study", "trial_id"]
    study = optuna.create_study(storage="sqlite:///:memory:", pruner=optuna.pruners.NopPruner())
    asked = study.ask()
    trial = optuna.trial.Trial(study, asked._trial_id)
    trial.report(0.5, 0)
    assert not trial.should_prune() and study.trials[0].intermediate_values == {0: 0.5}


def test_optunas_retry_history_reader_still_reads_the_retry_callbacks_history() -> None:
    """sweeping/study.py: ``retry_history`` through ``RetryFailedTrialCallback.retry_history`` (experimental)."""
    from narm_lightning.sweeping.study import requeue, retry_history

    storage = optuna.storages.RDBStorage("sqlite:///:memory:")
    study = optuna.create_study(storage=storage)
    first = study.ask()
    study.tell(first, state=optuna.trial.TrialState.FAIL)
    requeue(study, storage, first._trial_id, max_retry=None)
    waiting = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.WAITING]
    assert len(waiting) == 1 and retry_history(waiting[0]) == [0] and retry_history(study.trials[0]) == []


def test_optunas_grid_sampler_still_stops_the_study_where_the_sweeper_must_not() -> None:
    """sweeping/samplers.py overrides ``GridSampler.after_trial``, whose only work is ``study.stop()`` once the grid
    is done (illegal outside ``study.optimize``): if it does more one day, this test says so."""
    from narm_lightning.sweeping.samplers import grid_sampler_class

    source = inspect.getsource(optuna.samplers.GridSampler.after_trial)
    assert "study.stop()" in source
    study = optuna.create_study(sampler=optuna.samplers.GridSampler({"x": [0]}))
    trial = study.ask()
    with pytest.raises(RuntimeError):  # Optuna's own: stop() outside optimize
        optuna.samplers.GridSampler({"x": [0]}).after_trial(study, trial, optuna.trial.TrialState.COMPLETE, [0.0])
    grid_sampler_class()({"x": [0]}).after_trial(study, trial, optuna.trial.TrialState.COMPLETE, [0.0])


def test_dynamos_mark_dynamic_still_makes_one_graph_for_every_size_of_the_marked_dimension() -> None:
    """model/gru.py: ``torch._dynamo.mark_dynamic`` (no public equivalent in ``torch.compiler``) marks the step
    kernels' row count dynamic at their first call, so an epoch's short last batch compiles nothing more."""
    graphs = []

    def backend(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    double = torch.compile(lambda x: x * 2, backend=backend, fullgraph=True)
    first = torch.randn(8, 4)
    torch._dynamo.mark_dynamic(first, 0)
    for x in (first, torch.randn(5, 4), torch.randn(3, 4)):
        assert torch.equal(double(x), x * 2)
    assert len(graphs) == 1


def test_every_private_name_the_package_uses_is_listed_here() -> None:
    """A new ``torch._x`` / ``hydra._internal`` / ``optuna...Trial(`` in the package must come with its test above."""
    import re

    allowed = {"torch._dynamo.config", "torch._dynamo.mark_dynamic", "torch._utils",
               "hydra._internal.core_plugins.basic_launcher"}
    found = set()
    for path in PACKAGE.rglob("*.py"):
        code = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())
        found |= {m.group(0) for m in re.finditer(
            r"\b(?:torch|hydra|optuna|omegaconf|pytorch_lightning)(?:\.\w+)*?\._(?!target_|recursive_|_)\w+(?:\.\w+)*",
            code)}
    used = {name.rsplit(".", 1)[0] if name.startswith("torch._utils._") else name for name in found}
    assert {u for u in used if not any(u.startswith(a) for a in allowed)} == set(), used


def test_inductor_still_takes_the_options_the_fused_gru_compiles_with() -> None:
    """model/gru.py passes ``cpp.use_decompose_tanh`` and ``cpp.vec_isa_ok`` through torch.compile's public
    ``options`` (inductor's config names): a renamed option would be refused at the first compile, or ignored."""
    import torch._inductor

    options = set(torch._inductor.list_options())
    assert {"cpp.use_decompose_tanh", "cpp.vec_isa_ok"} <= options
