"""Validation of the composed config: every problem found at start-up, before data is read.

Hydra's struct mode already rejects unknown keys; this adds types, ranges and combinations, and turns
them into one ``ConfigError`` paragraph that names each key and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from narm_lightning.data.sources import SESSION_FORMATS
from narm_lightning.errors import ConfigError
from narm_lightning.losses import LOSS_TYPES, NegativeSampling
from narm_lightning.metrics import METRICS
from narm_lightning.module import OPTIMIZERS

DATA_FORMATS = ("atomic", *SESSION_FORMATS)  # the readers' own lists: a choice is written once
LEARNERS = tuple(OPTIMIZERS)
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
# ddp only among the multi-process strategies: the spawn/fork ones run fit() in child processes and hand
# back only weights and callback metrics, not the per-epoch valid history a run reports from.
STRATEGIES = ("auto", "ddp")
MAX_SEED = 2**32 - 1  # numpy.random.seed's upper bound (torch accepts more, NumPy does not)
PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64-true")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _is_plain_name(value: Any) -> bool:
    """A single path component: a dataset name is joined under data.root and names the run's folder."""
    return (_is_text(value) and value not in (".", "..") and not any(c in value for c in "/\\\0")
            and value == value.strip())


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
    if unknown or dist != "uniform" or not _is_int(num) or num < 1:
        raise ConfigError(
            f"train_neg_sample_args is {dict(args)!r}; expected {{distribution: uniform, sample_num: N}} with N >= 1 "
            "(only uniform sampling is supported)."
        )
    return NegativeSampling(sample_num=num, distribution=dist)


def config_problems(cfg: DictConfig) -> list[str]:
    """Every problem in ``cfg`` as one sentence naming the key; empty when the config can run."""
    problems: list[str] = []

    def need(ok: bool, key: str, expected: str) -> None:
        if not ok:
            value = OmegaConf.select(cfg, key, default=None)
            problems.append(f"{key} is {value!r}; expected {expected}")

    m = cfg.model
    for key in ("embedding_size", "hidden_size", "n_layers"):
        need(_is_int(m.get(key)) and m.get(key) > 0, f"model.{key}", "a positive integer")
    dp = m.get("dropout_probs")
    need(
        isinstance(dp, ListConfig) and len(dp) == 2 and all(_is_number(p) and 0 <= p < 1 for p in dp),
        "model.dropout_probs",
        "two probabilities in [0, 1): [embedding dropout, dropout on the concatenated vector]",
    )
    need(m.get("loss_type") in LOSS_TYPES, "model.loss_type", f"one of {', '.join(LOSS_TYPES)}")
    try:
        neg = negative_sampling(cfg.get("train_neg_sample_args"))
    except ConfigError as exc:
        problems.append(str(exc).rstrip("."))
        neg = None
    else:
        if m.get("loss_type") == "CE" and neg is not None:
            problems.append("model.loss_type is 'CE' with train_neg_sample_args set; CE uses every item, so "
                            "set train_neg_sample_args=null (or use model.loss_type=BPR)")
        if m.get("loss_type") == "BPR" and neg is None:
            problems.append("model.loss_type is 'BPR' but train_neg_sample_args is null; BPR needs negatives: "
                            "train_neg_sample_args={distribution:uniform,sample_num:1}")

    for key in ("train_batch_size", "eval_batch_size", "eval_step"):
        need(_is_int(cfg.get(key)) and cfg.get(key) > 0, key, "a positive integer")
    eval_step, n_epochs = cfg.get("eval_step"), cfg.get("epochs")
    if _is_int(eval_step) and _is_int(n_epochs) and 0 < n_epochs < eval_step:
        problems.append(f"eval_step is {eval_step} but epochs is {n_epochs}: no epoch would be validated, so no best "
                        f"model could be chosen; expected eval_step <= epochs")
    epochs = cfg.get("epochs")
    need(_is_int(epochs) and (epochs > 0 or (epochs == 0 and bool(cfg.get("init_from")))), "epochs",
         "a positive integer (or 0 together with init_from, to evaluate those weights only)")
    need(_is_int(cfg.get("stopping_step")) and cfg.get("stopping_step") >= 0, "stopping_step", "an integer >= 0")
    need(_is_int(cfg.get("seed")) and 0 <= cfg.get("seed") <= MAX_SEED, "seed",
         f"an integer in [0, {MAX_SEED}] (what NumPy and torch accept as a seed)")
    need(str(cfg.get("learner")).lower() in LEARNERS, "learner", f"one of {', '.join(LEARNERS)}")
    need(_is_number(cfg.get("learning_rate")) and cfg.get("learning_rate") > 0, "learning_rate", "a number > 0")
    need(_is_number(cfg.get("weight_decay")) and cfg.get("weight_decay") >= 0, "weight_decay", "a number >= 0")

    topk = cfg.get("topk")
    topk_ok = isinstance(topk, ListConfig) and len(topk) > 0 and all(_is_int(k) and k > 0 for k in topk)
    need(topk_ok, "topk", "a non-empty list of positive integers, e.g. [10, 20]")
    metrics = cfg.get("metrics")
    metrics_ok = isinstance(metrics, ListConfig) and len(metrics) > 0 and all(
        isinstance(x, str) and x.lower() in METRICS for x in metrics
    )
    need(metrics_ok, "metrics", f"a non-empty list drawn from {', '.join(x.title() for x in METRICS)}")
    if topk_ok and metrics_ok:
        computed = sorted({f"{x.upper()}@{k}" for x in metrics for k in topk})
        try:
            name, k = parse_metric_name(cfg.get("valid_metric"))
            ok = name in {x.lower() for x in metrics} and k in topk
        except ValueError:
            ok = False
        need(ok, "valid_metric", f"one of the computed metrics: {', '.join(computed)}")

    d = cfg.data
    need(_is_int(d.get("max_item_list_length")) and d.get("max_item_list_length") > 0,
         "data.max_item_list_length", "a positive integer")
    need(_is_int(d.get("num_workers")) and d.get("num_workers") >= 0, "data.num_workers", "an integer >= 0")
    bucket = d.get("bucket_batches", 0)
    need(bucket is None or (_is_int(bucket) and bucket >= 0), "data.bucket_batches", "an integer >= 0 (0: off)")
    need(_is_plain_name(d.get("dataset")), "data.dataset",
         "a dataset name (a folder under data.root: no path separators, not '.' or '..')")
    need(d.get("raw_folder") is None or _is_plain_name(d.get("raw_folder")), "data.raw_folder",
         "null or a folder name under data.root (no path separators)")
    need(d.get("format") in DATA_FORMATS, "data.format", f"one of {', '.join(DATA_FORMATS)}")
    if d.get("format") != "atomic":
        ratio = d.get("valid_ratio")
        need(_is_number(ratio) and 0 <= ratio < 1, "data.valid_ratio",
             "a share of the training examples in [0, 1) (0: no validation, train on all and test the last epoch)")
        trial = OmegaConf.select(cfg, "optuna.trial_id", default=None) is not None
        need(not (trial and ratio == 0), "data.valid_ratio",
             "above 0 in a sweep: a trial's objective is its best valid_metric, so it needs validation examples")
        need(d.get("raw_dataset") in (None, "diginetica", "yoochoose"), "data.raw_dataset",
             "null, diginetica or yoochoose")
        need(_is_int(d.get("fraction", 1)) and d.get("fraction", 1) >= 1, "data.fraction",
             "a positive integer (1, 4, 64)")
        need(d.get("tie_order", "first_seen") in ("first_seen", "python2"), "data.tie_order", "first_seen or python2")
        need(_is_int(d.get("min_item_support", 5)) and d.get("min_item_support", 5) >= 1, "data.min_item_support",
             "a positive integer")
    atomic_keys = ("user_id_field", "item_id_field", "time_field") if d.get("format") == "atomic" else ()
    for key in ("root", *atomic_keys):
        need(_is_text(d.get(key)), f"data.{key}", "a non-empty string")
    fields = [d.get(key) for key in atomic_keys]
    if len(set(fields)) < len(fields):
        problems.append(f"data.user_id_field, data.item_id_field and data.time_field are {', '.join(map(repr, fields))}"
                        "; expected three different columns of the atomic file")
    extra = d.get("extra_roots")
    need(extra is None or (isinstance(extra, ListConfig) and all(_is_text(r) for r in extra)),
         "data.extra_roots", "a list of folders (or [])")
    need(isinstance(d.get("download", False), bool), "data.download", "true or false")
    resume = cfg.get("resume")
    need(resume is None or _is_text(resume), "resume", "null or the run folder of an earlier run")

    t = cfg.trainer
    need(str(t.get("precision")) in PRECISIONS, "trainer.precision", f"one of {', '.join(PRECISIONS)}")
    threads = t.get("num_threads")
    need(threads is None or (_is_int(threads) and threads > 0), "trainer.num_threads", "null or a positive integer")
    need(str(t.get("accelerator")) in ACCELERATORS, "trainer.accelerator", f"one of {', '.join(ACCELERATORS)}")
    if str(t.get("accelerator")) in ("gpu", "cuda") and not torch.cuda.is_available():
        problems.append(f"trainer.accelerator is {t.get('accelerator')!r} but this machine has no CUDA device torch "
                        "can use (torch.cuda.is_available() is False); expected cpu or auto here (trainer=cpu)")
    if str(t.get("accelerator")) == "mps" and not torch.backends.mps.is_available():
        problems.append("trainer.accelerator is 'mps' but this machine has no Apple GPU torch can use; expected cpu")
    devices = t.get("devices")
    need((_is_int(devices) and (devices > 0 or devices == -1)) or devices == "auto"
         or (isinstance(devices, ListConfig) and len(devices) > 0 and all(_is_int(x) and x >= 0 for x in devices)),
         "trainer.devices", "a positive integer, -1 (all), 'auto' or a non-empty list of device ids")
    strategy = t.get("strategy", "auto")
    need(strategy in STRATEGIES, "trainer.strategy", f"one of {', '.join(STRATEGIES)}")
    nodes = t.get("num_nodes", 1)
    need(_is_int(nodes) and nodes > 0, "trainer.num_nodes", "a positive integer")
    if _is_int(nodes) and nodes > 1 and strategy == "auto":
        problems.append(f"trainer.num_nodes is {nodes} with trainer.strategy 'auto'; several machines need a "
                        "multi-process strategy: use trainer=ddp")
    for key in ("deterministic", "enable_progress_bar"):
        need(isinstance(t.get(key), bool), f"trainer.{key}", "true or false")
    need(_is_int(t.get("log_every_n_steps")) and t.get("log_every_n_steps") > 0, "trainer.log_every_n_steps",
         "a positive integer")
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        limit = t.get(key)
        need(limit is None or (_is_int(limit) and limit > 0) or (isinstance(limit, float) and 0 < limit <= 1),
             f"trainer.{key}", "null, a positive number of batches or a fraction in (0, 1]")
    return problems


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
