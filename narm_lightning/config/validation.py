"""Validation of the composed config: every problem found at start-up, before data is read.

Hydra's struct mode already rejects unknown keys; the schema (``narm_lightning.config.schema``) gives each key's
type, range and choices; ``cross_field_problems`` adds the rules between keys. All of it becomes one
``ConfigError`` paragraph that names each key and what was expected.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from narm_lightning.config.eval_args import SEQUENTIAL_EVAL_ARGS, eval_args_problems, mode_of
from narm_lightning.config.rules import is_int, is_list, keys_of, schema_problems, undeclared_keys
from narm_lightning.config.schema import ACCURACY_METRICS, LOGGERS, TrainConfig, data_schema
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
    """The rules that tie several keys together (each key alone is checked by the schema)."""
    problems: list[str] = []
    m, d, t = cfg.model, cfg.data, cfg.trainer
    try:
        neg = negative_sampling(cfg.get("train_neg_sample_args"))
    except ConfigError as exc:
        problems.append(str(exc).rstrip("."))
    else:
        if m.get("loss_type") == "CE" and neg is not None:
            problems.append("model.loss_type is 'CE' with train_neg_sample_args set; CE uses every item, so "
                            "set train_neg_sample_args=null (or use model.loss_type=BPR)")
        if m.get("loss_type") == "BPR" and neg is None:
            problems.append("model.loss_type is 'BPR' but train_neg_sample_args is null; BPR needs negatives: "
                            "train_neg_sample_args={distribution:uniform,sample_num:1}")
    epochs, eval_step = cfg.get("epochs"), cfg.get("eval_step")
    if epochs == 0 and is_int(epochs) and not cfg.get("init_from"):
        problems.append("epochs is 0 without init_from; expected a positive integer (or 0 together with init_from, "
                        "to evaluate those weights only)")
    if is_int(eval_step) and is_int(epochs) and 0 < epochs < eval_step:
        problems.append(f"eval_step is {eval_step} but epochs is {epochs}: no epoch would be validated, so no best "
                        f"model could be chosen; expected eval_step <= epochs")
    problems += _valid_metric_problems(cfg)
    eval_args = cfg.get("eval_args")
    plain = OmegaConf.to_container(eval_args) if isinstance(eval_args, (DictConfig, ListConfig)) else eval_args
    eval_problems = eval_args_problems(plain)
    problems += eval_problems
    filled = {**SEQUENTIAL_EVAL_ARGS, **plain} if isinstance(plain, Mapping) else SEQUENTIAL_EVAL_ARGS
    split = (plain or {}).get("split") if isinstance(plain, Mapping) else None
    no_valid = split in ({"LS": "test_only"},) or (isinstance(split, Mapping) and "RS" in split
                                                   and is_list(split["RS"]) and len(split["RS"]) == 3
                                                   and split["RS"][1] == 0)
    if no_valid and cfg.optuna.get("trial_id") is not None:
        problems.append(f"eval_args.split is {split!r} in a sweep; expected a split with validation examples: a "
                        "trial's objective is its best valid_metric")
    if plain is not None and d.get("format") != "atomic":
        problems.append(f"eval_args is {plain!r} with data.format {d.get('format')!r}; expected null: a session "
                        "dataset has its own test file and validates on data.valid_ratio of its training examples")
    extra = cfg.get("extra_test_modes")
    modes = [] if eval_problems else [mode_of(filled["mode"], s) for s in ("valid", "test")]
    sampled = [m for m in modes + (list(extra) if is_list(extra) else []) if m != "full"] or eval_problems
    if d.get("eval_candidates") is not None and not sampled:
        problems.append(f"data.eval_candidates is {d.eval_candidates!r} but no split is scored on sampled candidates; "
                        "expected eval_args.mode or extra_test_modes with uniN / popN (or eval_candidates=null)")
    if d.get("benchmark_filename") and any(v is not None for v in active_filters(d).values()):
        problems.append(f"data.benchmark_filename is {list(d.benchmark_filename)} with interaction filters "
                        f"({', '.join(k for k, v in active_filters(d).items() if v is not None)}); expected none: "
                        "benchmark files are examples already, and RecBole filters nothing in them")
    if d.get("format") != "atomic" and d.get("valid_ratio") == 0 and cfg.optuna.get("trial_id") is not None:
        problems.append("data.valid_ratio is 0; expected above 0 in a sweep: a trial's objective is its best "
                        "valid_metric, so it needs validation examples")
    if "path" in d and (d.get("session_field") is None) == (d.get("user_field") is None):
        problems.append(f"data.session_field is {d.get('session_field')!r} and data.user_field is "
                        f"{d.get('user_field')!r}; expected exactly one of them: the column that groups the clicks "
                        "into sequences (a session id, or a user id with data.session_field=null)")
    fields = [d.get(key) for key in ("user_id_field", "item_id_field", "time_field") if key in d]
    if len(set(map(str, fields))) < len(fields):
        problems.append(f"data.user_id_field, data.item_id_field and data.time_field are {', '.join(map(repr, fields))}"
                        "; expected three different columns of the atomic file")
    accelerator = str(t.get("accelerator"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        problems.append(f"trainer.accelerator is {accelerator!r} but this machine has no CUDA device torch can use "
                        "(torch.cuda.is_available() is False); expected cpu or auto here (trainer=cpu)")
    if accelerator == "mps" and not torch.backends.mps.is_available():
        problems.append("trainer.accelerator is 'mps' but this machine has no Apple GPU torch can use; expected cpu")
    devices = t.get("devices")
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
