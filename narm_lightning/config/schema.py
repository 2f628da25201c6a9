"""The config schema, declared once: every key's type, default, allowed values and one-line help.

The dataclasses below back the YAML under ``conf/``: their defaults are registered in Hydra's ConfigStore
(group ``schema``) and each YAML file includes its schema, then sets only what that option changes. The
same declarations give ``config.config_problems`` every type, range and choice it checks, and ``--help``
every key's help line, so a key, its default, its rule and its help can never disagree.

The nodes are registered as plain mappings, not as typed structured configs, on purpose: OmegaConf's typed
nodes convert silently (``resume=7`` becomes ``'7'``, ``data.download=yes`` becomes ``True``,
``data.extra_roots=[1]`` becomes ``['1']``), and a wrong value must be refused by name instead.
Hydra's struct mode still refuses every key not declared here. Import-light (no torch): ``--help`` and the
sweeper plugin read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from narm_lightning.config.data_schema import (
    MAX_SEED,
    AtomicDataConfig,
    ClicksDataConfig,
    SessionDataConfig,
    file_stem,
)
from narm_lightning.config.eval_args import eval_mode_ok
from narm_lightning.config.rules import (
    BOOLEAN,
    REQUIRED,
    TEXT,
    Rule,
    defaults_of,
    integer,
    is_int,
    is_list,
    is_number,
    is_text,
    key,
    number,
    one_of,
)
from narm_lightning.config.serving import ExportConfig, RecommendConfig

# The choices, each written once; the modules that implement them import them from here.
# learner name -> torch.optim class
LEARNERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop"}
LOSS_TYPES = ("CE", "BPR")
# RecBole's names, lower case: accuracy metrics of the target's rank, then RecBole's beyond-accuracy ones, which
# read the top-K lists (ACCURACY: the ones that can select a model: higher is better)
ACCURACY_METRICS = ("recall", "mrr", "ndcg", "hit", "precision", "map")
METRICS = (*ACCURACY_METRICS, "itemcoverage", "averagepopularity", "giniindex", "shannonentropy", "tailpercentage")
METRIC_NAMES = {"recall": "Recall", "mrr": "MRR", "ndcg": "NDCG", "hit": "Hit", "precision": "Precision", "map": "MAP",
                "itemcoverage": "ItemCoverage", "averagepopularity": "AveragePopularity", "giniindex": "GiniIndex",
                "shannonentropy": "ShannonEntropy", "tailpercentage": "TailPercentage"}
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
# ddp only among the multi-process strategies: the spawn/fork ones run fit() in child processes and hand
# back only weights and callback metrics, not the per-epoch valid history a run reports from.
STRATEGIES = ("auto", "ddp")
PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64-true")
WANDB_MODES = ("online", "offline", "disabled")


# ---- rules: what a valid value is, as one phrase and one predicate -------------------------------------------


def _clip_ok(value: Any) -> bool:
    return (isinstance(value, Mapping) and set(value) <= {"max_norm", "norm_type"} and is_number(value.get("max_norm"))
            and value.get("max_norm") > 0 and value.get("norm_type", 2) in (2, 2.0))


def _limit(value: Any) -> bool:
    return value is None or (is_int(value) and value > 0) or (isinstance(value, float) and 0 < value <= 1)


def _devices(value: Any) -> bool:
    return ((is_int(value) and (value > 0 or value == -1)) or value == "auto"
            or (is_list(value) and len(value) > 0 and all(is_int(x) and x >= 0 for x in value)))


def _metrics(value: Any) -> bool:
    return is_list(value) and len(value) > 0 and all(isinstance(x, str) and x.lower() in METRICS for x in value)


LIMIT = Rule("null, a positive number of batches or a fraction in (0, 1]", _limit)


# ---- the schema -------------------------------------------------------------------------------------------------


GRU_IMPLS = ("auto", "torch", "fused")  # model.gru_impl: fused on CPU, nn.GRU, narm_lightning.model.gru's FusedGRU


@dataclass
class ModelConfig:
    """NARM as in RecBole (recbole/model/sequential_recommender/narm.py)."""

    embedding_size: int = key(64, "item embedding width E", integer())
    hidden_size: int = key(128, "GRU hidden width H", integer())
    n_layers: int = key(1, "stacked GRU layers", integer())
    dropout_probs: list[float] = key(
        [0.25, 0.5], "[dropout on item embeddings, dropout on the concatenated local+global vector]",
        Rule("two probabilities in [0, 1): [embedding dropout, dropout on the concatenated vector]",
             lambda v: is_list(v) and len(v) == 2 and all(is_number(p) and 0 <= p < 1 for p in v)))
    loss_type: str = key("CE", "CE (softmax over all items) or BPR (needs train_neg_sample_args)", one_of(LOSS_TYPES))
    gru_impl: str = key("auto", "the GRU's kernels: fused (one GEMM + one compiled kernel a step, "
                        "narm_lightning/model/gru.py; CPU evaluation skips padded steps), torch (nn.GRU), auto (fused "
                        "on CPU, nn.GRU on a GPU); the same parameters and, to fp32 rounding, scores either way",
                        one_of(GRU_IMPLS))


@dataclass
class TrainerConfig:
    """Lightning Trainer settings (trainer=cpu; gpu and ddp change some)."""

    accelerator: str = key("cpu", "the device kind (gpu and cuda: CUDA; auto: what Lightning finds)",
                           one_of(ACCELERATORS))
    devices: Any = key(1, "number of devices (or a list of ids, -1 for all)",
                       Rule("a positive integer, -1 (all), 'auto' or a non-empty list of device ids", _devices))
    num_nodes: int = key(1, "machines; >1 only with a multi-process strategy (trainer=ddp)", integer())
    strategy: str = key("auto", "auto (one process) or ddp (several: trainer=ddp)", one_of(STRATEGIES))
    precision: Any = key("auto", "auto: bf16-mixed on a GPU or a CPU with native bf16 (AMX, AVX512-BF16), else "
                         "32-true (RecBole's exact path)",
                         Rule(f"one of {', '.join(PRECISIONS)}", lambda v: str(v) in PRECISIONS, PRECISIONS))
    num_threads: int | None = key(None, "torch intra-op threads; null keeps torch's default (all cores)",
                                  integer(expect="null or a positive integer"))
    deterministic: bool = key(False, "torch deterministic algorithms (slower; CPU runs are reproducible anyway)",
                              BOOLEAN)
    enable_progress_bar: bool = key(True, "progress bars for training and evaluation", BOOLEAN)
    log_every_n_steps: int = key(10, "how often step-level metrics reach the loggers", integer())
    limit_train_batches: Any = key(None, "null for all; an int (batches) or float (fraction) for quick checks",
                                   LIMIT)
    limit_val_batches: Any = key(None, "null for all valid rows; an int/float only for quick checks (changes the "
                                 "metrics)", LIMIT)
    limit_test_batches: Any = key(None, "null for all test rows; an int/float only for quick checks (changes the "
                                  "metrics)", LIMIT)


@dataclass
class OptunaConfig:
    """Set by the sweeper for each trial; left null when training by hand."""

    storage: str | None = key(None, "Optuna storage URL of the running study", hidden=True)
    study_name: str | None = key(None, "the study's name", hidden=True)
    trial_id: int | None = key(None, "the trial this run reports its valid_metric to (for pruning)", hidden=True)


@dataclass
class WandbConfig:
    """Weights & Biases, offline by default (logger=wandb)."""

    mode: str | None = key(None, "null: offline unless WANDB_MODE or WANDB_API_KEY is set; or online, offline, "
                           "disabled", one_of((None, *WANDB_MODES)))
    project: str = key("narm-lightning", "W&B project the runs belong to", TEXT)
    entity: str | None = key(None, "W&B user or team (null: your default entity)")
    group: str | None = key(None, "run group (null: the Optuna study name in a sweep, else none)")
    tags: list[str] = key([], "extra tags; a final state tag (complete, pruned, failed) is always added",
                          Rule("a list of strings, e.g. [baseline,ml-100k]",
                               lambda v: is_list(v) and all(isinstance(t, str) for t in v)))
    name: str | None = key(None, "run name (null: <dataset>-<timestamp>; a sweep sets the trial's name)")
    dir: str | None = key(None, "where the wandb/ folder goes (null: the run directory)")
    log_model: bool = key(False, "true: upload the best checkpoint as a 'model' artifact (aliased best)", BOOLEAN)


@dataclass
class CsvLoggerConfig:
    """Lightning's CSVLogger: metrics.csv in the run directory (logger=csv)."""

    name: str = key("csv", "sub-folder of the run directory", TEXT)


@dataclass
class TensorBoardLoggerConfig:
    """Lightning's TensorBoardLogger (logger=tensorboard; needs the tensorboard extra)."""

    name: str = key("tensorboard", "sub-folder of the run directory", TEXT)


LOGGERS: dict[str, type] = {"wandb": WandbConfig, "csv": CsvLoggerConfig, "tensorboard": TensorBoardLoggerConfig}


@dataclass
class TrainConfig:
    """Top-level keys of training (names follow RecBole's); ``model``, ``data``, ``trainer`` and ``logger``
    are filled by their config groups."""

    seed: int = key(2020, "seeds Python, NumPy and torch (and the train shuffle)",
                    integer(0, MAX_SEED, expect=f"an integer in [0, {MAX_SEED}] (what NumPy and torch accept as a "
                                                "seed)"))
    epochs: int = key(300, "maximum training epochs (0 with init_from: evaluate those weights only)",
                      integer(0, expect="a positive integer (or 0 together with init_from, to evaluate those weights "
                                        "only)"))
    train_batch_size: int = key(2048, "training examples per step", integer())
    eval_batch_size: int = key(4096, "rows per evaluation block (its eval_batch_size x n_items scores are held "
                               "only for beyond-accuracy metrics and sampled candidates; ranks need none)", integer())
    learner: str = key("adam", "optimizer", one_of(tuple(LEARNERS), fold_case=True))
    learning_rate: float = key(0.001, "optimizer step size", number(above=0, expect="a number > 0"))
    weight_decay: float = key(0.0, "L2 penalty passed to the optimizer", number(at_least=0, expect="a number >= 0"))
    stopping_step: int = key(10, "early stopping: stop after stopping_step+1 epochs without a better valid_metric "
                             "(as RecBole)", integer(0))
    eval_step: int = key(1, "validate every eval_step training epochs", integer())
    metrics: list[str] = key(["Recall", "MRR", "NDCG", "Hit", "Precision"], "full-sort metrics to compute at every "
                             "K (RecBole's names and definitions)",
                             Rule(f"a non-empty list drawn from {', '.join(METRIC_NAMES.values())}", _metrics))
    topk: list[int] = key([10], "cut-offs K for every metric",
                          Rule("a non-empty list of positive integers, e.g. [10, 20]",
                               lambda v: is_list(v) and len(v) > 0 and all(is_int(k) and k > 0 for k in v)))
    valid_metric: str = key("MRR@10", "model selection and early stopping metric (METRIC@K, one of metrics x topk; "
                            "an accuracy metric: higher is better)")
    tail_ratio: float = key(0.1, "TailPercentage's long tail: in (0, 1], that share of the train items, least "
                            "frequent first; above 1, the items seen at most that often (RecBole's tail_ratio)",
                            number(above=0, expect="a number > 0"))
    metric_decimal_place: int = key(4, "decimals of the console's metric table (results.json keeps full precision)",
                                    integer(0, 12, expect="an integer in [0, 12]"))
    clip_grad_norm: Any = key(None, "null, or {max_norm: X} to clip the gradients' 2-norm (RecBole's clip_grad_norm)",
                              Rule("null or {max_norm: a number > 0} (norm_type 2, the only one Lightning clips by)",
                                   lambda v: v is None or _clip_ok(v)))
    train_neg_sample_args: Any = key(None, "null for CE; for BPR {distribution: uniform or popularity, sample_num: N, "
                                     "alpha: a} (popularity: count ** alpha, RecBole's)")
    init_from: str | None = key(None, "start from these weights: a narm-lightning .ckpt or a RecBole "
                                "saved/NARM-*.pth", TEXT)
    config_file: str | None = key(None, "a RecBole .yaml config; its keys apply under your command-line overrides",
                                  TEXT)
    resume: str | None = key(None, "a run folder to continue from its checkpoints/last.ckpt with its saved "
                             "config.yaml", Rule("null or the run folder of an earlier run", is_text))
    # checked by eval_args_problems: one message a key
    eval_args: Any = key(None, "RecBole's eval_args; null: {split: {LS: valid_and_test}, order: TO, group_by: user, "
                         "mode: full}. Also {LS: test_only}, {RS: [8, 1, 1]} (group_by user or null), mode uni100 / "
                         "pop100 or {valid: .., test: ..}; keys left out keep those (atomic datasets)")
    extra_test_modes: list[str] = key([], "test also under these modes (full, uniN, popN), beside eval_args.mode's "
                                      "figures: results.json extra_tests.<mode>, logged as test_<mode>/<metric>",
                                      Rule("a list of distinct modes, e.g. [full, uni100, pop100]",
                                           lambda v: is_list(v) and len(set(v)) == len(v)
                                           and all(map(eval_mode_ok, v))))
    optuna: OptunaConfig = field(default_factory=OptunaConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: Any = REQUIRED  # the data group: AtomicDataConfig or SessionDataConfig
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: Any = field(default_factory=dict)  # the logger group: any of LOGGERS by name


# Where each schema is registered (included by the YAML as /schema/<name>@_here_, or as the primary's base).
REGISTERED: dict[str, type] = {
    "train": TrainConfig,
    "data_atomic": AtomicDataConfig,
    "data_sessions": SessionDataConfig,
    "data_clicks": ClicksDataConfig,
    "logger_wandb": WandbConfig,
    "logger_csv": CsvLoggerConfig,
    "logger_tensorboard": TensorBoardLoggerConfig,
}


def register() -> None:
    """Put the schemas into Hydra's ConfigStore (idempotent); imported modules call it before composing."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("narm.file_stem", file_stem, replace=True)
    cs = ConfigStore.instance()
    for name, schema in REGISTERED.items():
        cs.store(group="schema", name=name, node=defaults_of(schema), provider="narm_lightning")
    for name, schema in (("recommend", RecommendConfig), ("export", ExportConfig)):
        cs.store(group="schema", name=name, node=defaults_of(schema), provider="narm_lightning")
