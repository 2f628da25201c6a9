"""Validation of the composed config: every problem found at start-up, before data is read.

Hydra's struct mode already rejects unknown keys; the schema (``narm_lightning.config.schema``) gives each key's
type, range and choices; ``cross_field_problems`` adds the rules between keys. All of it becomes one
``ConfigError`` paragraph that names each key and what was expected.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from narm_lightning.config.data_schema import RAW_DATASETS, data_schema
from narm_lightning.config.eval_args import SEQUENTIAL_EVAL_ARGS, eval_args_problems, mode_of
from narm_lightning.config.rules import is_int, is_list, keys_of, schema_problems, undeclared_keys
from narm_lightning.config.schema import ACCURACY_METRICS, LOGGERS, TrainConfig
from narm_lightning.data.card import active_filters
from narm_lightning.errors import ConfigError
from narm_lightning.model.negatives import NegativeSampling
from narm_lightning.tracking.wandb_runs import check_credentials


def parse_metric_name(name: str) -> tuple[str, int]:
    """``"MRR@10"`` -> ``("mrr", 10)``; raises ``ValueError`` when it is not METRIC@K."""
    metric, sep, k = str(name).partition("@")
    if not sep or not k.isdigit():
        raise ValueError(name)
    return metric.lower(), int(k)


def negative_sampling(args: Any) -> NegativeSampling | None:
    """RecBole's ``train_neg_sample_args`` as an object (``None`` for no sampling)."""
    if args is None:
        return None
    if isinstance(args, (DictConfig, ListConfig)):
        args = OmegaConf.to_container(args)
    if not isinstance(args, Mapping):
        raise ConfigError(
            f"train_neg_sample_args is {args!r}; expected null or {{distribution: uniform, sample_num: N}}."
        )
    unknown = set(args) - {"distribution", "sample_num", "alpha", "dynamic", "candidate_num"}
    dist = args.get("distribution", "uniform")
    num = args.get("sample_num", 1)
    alpha = 1.0 if args.get("alpha") is None else args.get("alpha")  # RecBole's default alpha
    dynamic = args.get("dynamic", False)
    if (unknown or dist not in ("uniform", "popularity") or not is_int(num) or num < 1
            or not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool)) or dynamic not in (False, None)):
        raise ConfigError(
            f"train_neg_sample_args is {dict(args)!r}; expected {{distribution: uniform or popularity, sample_num: N, "
            "alpha: a}} with N >= 1 (alpha weights popularity: count ** alpha; dynamic negatives are not supported)."
        )
    return NegativeSampling(sample_num=num, distribution=dist, alpha=float(alpha))


def config_problems(cfg: DictConfig) -> list[str]:
    """Every problem in ``cfg`` as one sentence naming the key; empty when the config can run."""
    problems = schema_problems(cfg, TrainConfig)
    problems += schema_problems(cfg.data, data_schema(cfg.data), "data.")
    # (a composed sweep config still holds Hydra's own node: the sweeper checks trial configs before Hydra drops it)
    unread = [k for k in undeclared_keys(cfg, TrainConfig) if k != "hydra"]
    unread += undeclared_keys(cfg.data, data_schema(cfg.data), "data.")
    for name, options in (cfg.get("logger") or {}).items():
        if name in LOGGERS:
            problems += schema_problems(options, LOGGERS[name], f"logger.{name}.")
            unread += undeclared_keys(options, LOGGERS[name], f"logger.{name}.")
    return problems + [_unread(key) for key in unread] + cross_field_problems(cfg)


def _unread(key: str) -> str:
    """A key added with ``+key=...`` (or by a config file) that no part of the program reads: refused, never ignored."""
    from narm_lightning.config.keys import known_keys

    close = difflib.get_close_matches(key, known_keys(), n=1, cutoff=0.75)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"{key} is set but nothing reads it ({hint}`--help` lists every key); expected only declared keys"


def cross_field_problems(cfg: DictConfig) -> list[str]:
    """The rules that tie several keys together (each key alone is checked by the schema), each one named below."""
    return [problem for rule in CROSS_FIELD_RULES for problem in rule(cfg)]


def _loss_and_negatives(cfg: DictConfig) -> list[str]:
    """CE scores every item and takes no negatives; BPR needs them (RecBole's train_neg_sample_args)."""
    try:
        neg = negative_sampling(cfg.get("train_neg_sample_args"))
    except ConfigError as exc:
        return [str(exc).rstrip(".")]
    loss = cfg.model.get("loss_type")
    if loss == "CE" and neg is not None:
        return ["model.loss_type is 'CE' with train_neg_sample_args set; CE uses every item, so "
                "set train_neg_sample_args=null (or use model.loss_type=BPR)"]
    if loss == "BPR" and neg is None:
        return ["model.loss_type is 'BPR' but train_neg_sample_args is null; BPR needs negatives: "
                "train_neg_sample_args={distribution:uniform,sample_num:1}"]
    return []


def _epochs_and_eval_step(cfg: DictConfig) -> list[str]:
    """No training only to evaluate given weights; at least one validated epoch to choose the best model from."""
    epochs, eval_step = cfg.get("epochs"), cfg.get("eval_step")
    if epochs == 0 and is_int(epochs) and not cfg.get("init_from"):
        return ["epochs is 0 without init_from; expected a positive integer (or 0 together with init_from, "
                "to evaluate those weights only)"]
    if is_int(eval_step) and is_int(epochs) and 0 < epochs < eval_step:
        return [f"eval_step is {eval_step} but epochs is {epochs}: no epoch would be validated, so no best "
                f"model could be chosen; expected eval_step <= epochs"]
    return []


def _plain_eval_args(cfg: DictConfig) -> Any:
    eval_args = cfg.get("eval_args")
    return OmegaConf.to_container(eval_args) if isinstance(eval_args, (DictConfig, ListConfig)) else eval_args


def _eval_args_problems(cfg: DictConfig) -> list[str]:
    """``eval_args`` as RecBole reads it (config/eval_args.py)."""
    return eval_args_problems(_plain_eval_args(cfg))


def _a_sweep_validates(cfg: DictConfig) -> list[str]:
    """A trial's objective is its best valid_metric: a sweep needs validation examples."""
    if cfg.optuna.get("trial_id") is None:
        return []
    plain = _plain_eval_args(cfg)
    split = plain.get("split") if isinstance(plain, Mapping) else None
    no_valid = split in ({"LS": "test_only"},) or (isinstance(split, Mapping) and "RS" in split
                                                   and is_list(split["RS"]) and len(split["RS"]) == 3
                                                   and split["RS"][1] == 0)
    problems = [f"eval_args.split is {split!r} in a sweep; expected a split with validation examples: a "
                "trial's objective is its best valid_metric"] if no_valid else []
    if cfg.data.get("format") != "atomic" and cfg.data.get("valid_ratio") == 0:
        problems.append("data.valid_ratio is 0; expected above 0 in a sweep: a trial's objective is its best "
                        "valid_metric, so it needs validation examples")
    return problems


def _eval_args_only_for_atomic(cfg: DictConfig) -> list[str]:
    """A session dataset brings its own test file: RecBole's split settings do not apply."""
    plain, d = _plain_eval_args(cfg), cfg.data
    if plain is not None and d.get("format") != "atomic":
        return [f"eval_args is {plain!r} with data.format {d.get('format')!r}; expected null: a session "
                "dataset has its own test file and validates on data.valid_ratio of its training examples"]
    return []


def _raw_format_names_its_log(cfg: DictConfig) -> list[str]:
    """data.format=raw preprocesses a published click log: which one (its file name and reader) is data.raw_dataset."""
    d = cfg.data
    if d.get("format") == "raw" and "path" not in d and d.get("raw_dataset") is None:
        return [f"data.format is 'raw' with data.raw_dataset null; expected data.raw_dataset "
                f"{' or '.join(RAW_DATASETS)} (which published click log to read and preprocess), or data=clicks "
                "data.path=<file> for a log of your own"]
    return []


def _candidates_are_scored(cfg: DictConfig) -> list[str]:
    """A file of sampled candidates is read only where some split is scored on sampled candidates."""
    d = cfg.data
    if d.get("eval_candidates") is None:
        return []
    plain = _plain_eval_args(cfg)
    broken = bool(eval_args_problems(plain))
    filled = {**SEQUENTIAL_EVAL_ARGS, **plain} if isinstance(plain, Mapping) else SEQUENTIAL_EVAL_ARGS
    modes = [] if broken else [mode_of(filled["mode"], s) for s in ("valid", "test")]
    extra = cfg.get("extra_test_modes")
    if [m for m in modes + (list(extra) if is_list(extra) else []) if m != "full"] or broken:
        return []
    return [f"data.eval_candidates is {d.eval_candidates!r} but no split is scored on sampled candidates; "
            "expected eval_args.mode or extra_test_modes with uniN / popN (or eval_candidates=null)"]


def _benchmark_files_unfiltered(cfg: DictConfig) -> list[str]:
    """Benchmark files are examples already: RecBole filters nothing in them, so neither do we."""
    d = cfg.data
    if d.get("benchmark_filename") and any(v is not None for v in active_filters(d).values()):
        return [f"data.benchmark_filename is {list(d.benchmark_filename)} with interaction filters "
                f"({', '.join(k for k, v in active_filters(d).items() if v is not None)}); expected none: "
                "benchmark files are examples already, and RecBole filters nothing in them"]
    return []


def _one_grouping_column(cfg: DictConfig) -> list[str]:
    """A click log groups its clicks by a session column or by a user column, never both, never neither."""
    d = cfg.data
    if "path" in d and (d.get("session_field") is None) == (d.get("user_field") is None):
        return [f"data.session_field is {d.get('session_field')!r} and data.user_field is "
                f"{d.get('user_field')!r}; expected exactly one of them: the column that groups the clicks "
                "into sequences (a session id, or a user id with data.session_field=null)"]
    return []


def _distinct_atomic_columns(cfg: DictConfig) -> list[str]:
    """The user, item and time columns of an atomic file are three columns."""
    fields = [cfg.data.get(key) for key in ("user_id_field", "item_id_field", "time_field") if key in cfg.data]
    if len(set(map(str, fields))) < len(fields):
        return [f"data.user_id_field, data.item_id_field and data.time_field are {', '.join(map(repr, fields))}"
                "; expected three different columns of the atomic file"]
    return []


def _accelerator_present(cfg: DictConfig) -> list[str]:
    """The accelerator asked for exists on this machine."""
    accelerator = str(cfg.trainer.get("accelerator"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        return [f"trainer.accelerator is {accelerator!r} but this machine has no CUDA device torch can use "
                "(torch.cuda.is_available() is False); expected cpu or auto here (trainer=cpu)"]
    if accelerator == "mps" and not torch.backends.mps.is_available():
        return ["trainer.accelerator is 'mps' but this machine has no Apple GPU torch can use; expected cpu"]
    return []


def _devices_and_nodes(cfg: DictConfig) -> list[str]:
    """Lightning's rules: CPU devices are a count of processes; several machines need a multi-process strategy."""
    t, problems = cfg.trainer, []
    accelerator, devices = str(t.get("accelerator")), t.get("devices")
    cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if cpu and not (devices == "auto" or (is_int(devices) and devices > 0)):  # Lightning's CPU rule
        problems.append(f"trainer.devices is {devices!r} on the CPU; expected a positive number of processes (or "
                        "'auto'): -1 and lists of device ids name GPUs")
    nodes = t.get("num_nodes", 1)
    if is_int(nodes) and nodes > 1 and t.get("strategy", "auto") == "auto":
        problems.append(f"trainer.num_nodes is {nodes} with trainer.strategy 'auto'; several machines need a "
                        "multi-process strategy: use trainer=ddp")
    return problems


def _valid_metric_problems(cfg: DictConfig) -> list[str]:
    """``valid_metric`` must be one of the metrics computed (metrics x topk), once those two are valid."""
    topk, metrics = cfg.get("topk"), cfg.get("metrics")
    if any(k.problem(cfg.get(k.name)) for k in keys_of(TrainConfig) if k.name in ("topk", "metrics")):
        return []
    computed = sorted({f"{x.upper()}@{k}" for x in metrics for k in topk})
    try:
        name, k = parse_metric_name(cfg.get("valid_metric"))
        ok = name in {x.lower() for x in metrics} and k in topk
    except ValueError:
        ok = False
    if ok and name not in ACCURACY_METRICS:
        return [f"valid_metric is {cfg.get('valid_metric')!r}, a beyond-accuracy metric; expected an accuracy metric "
                f"(higher is better, so early stopping can use it): one of {', '.join(ACCURACY_METRICS)} at a topk K"]
    if ok:
        return []
    return [f"valid_metric is {cfg.get('valid_metric')!r}; expected one of the computed metrics: {', '.join(computed)}"]


def data_problems(cfg: DictConfig, n_items: int, n_batches: Mapping[str, int]) -> list[str]:
    """What only the loaded data can tell: a K beyond the catalogue, a batch limit that leaves no batch.

    ``n_items`` counts real items (no padding); ``n_batches`` maps ``train``/``val``/``test`` to full counts.
    """
    problems = []
    too_big = [k for k in cfg.topk if k > n_items]
    if too_big:
        problems.append(f"topk holds {too_big} but the dataset has only {n_items} items, so @{too_big[0]} would rank "
                        f"every item (recall 1.0); expected cut-offs up to {n_items}")
    for stage, total in n_batches.items():
        key = f"trainer.limit_{stage}_batches"
        limit = OmegaConf.select(cfg, key, default=None)
        if isinstance(limit, float) and total > 0 and int(limit * total) < 1:
            problems.append(f"{key} is {limit}, which of {total} batches is {limit * total:.3g}: no batch would run; "
                            f"expected at least {1 / total:.3g} (one batch) or a whole number of batches")
    return problems


def validate(cfg: DictConfig) -> None:
    """Raise one ``ConfigError`` listing every problem, or return when the config can run."""
    problems = config_problems(cfg)
    if problems:
        raise ConfigError("Invalid config: " + "; ".join(problems) + ".")
    wandb = (cfg.get("logger") or {}).get("wandb")
    if wandb is not None:  # the environment, not the config: online W&B without a key (a sweep checks it up front)
        check_credentials(wandb)


# every rule between keys, in the order their problems are listed (each named for what it keeps true)
CROSS_FIELD_RULES: tuple[Callable[[DictConfig], list[str]], ...] = (
    _loss_and_negatives, _epochs_and_eval_step, _valid_metric_problems, _eval_args_problems, _a_sweep_validates,
    _eval_args_only_for_atomic, _raw_format_names_its_log, _candidates_are_scored, _benchmark_files_unfiltered,
    _one_grouping_column, _distinct_atomic_columns, _accelerator_present, _devices_and_nodes,
)
