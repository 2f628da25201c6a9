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

from narm_lightning.config.eval_args import eval_mode_ok
from narm_lightning.config.intervals import parse_intervals
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
SESSION_FORMATS = ("auto", "session_text", "session_pickle", "raw")
RAW_DATASETS = ("diginetica", "yoochoose")
CLICK_FORMATS = ("auto", "csv", "tsv", "parquet")  # data=clicks: auto reads the file's suffix
CLICK_SPLITS = ("time", "leave_one_out")
CLICK_DELIMITERS = (",", ";", "\t", "|")  # what data.delimiter=null sniffs among
TIE_ORDERS = ("first_seen", "python2")
TIME_ORDERS = ("recbole", "exact")  # data.time_order: see data/protocol.py time_keys
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
# ddp only among the multi-process strategies: the spawn/fork ones run fit() in child processes and hand
# back only weights and callback metrics, not the per-epoch valid history a run reports from.
STRATEGIES = ("auto", "ddp")
PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64-true")
WANDB_MODES = ("online", "offline", "disabled")
MAX_SEED = 2**32 - 1  # numpy.random.seed's upper bound (torch accepts more, NumPy does not)


# ---- rules: what a valid value is, as one phrase and one predicate -------------------------------------------


def _plain_name(value: Any) -> bool:
    """A single path component: a dataset name is joined under data.root and names the run's folder."""
    return (is_text(value) and value not in (".", "..") and not any(c in value for c in "/\\\0")
            and value == value.strip())


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
class DataConfig:
    """What every dataset config has."""

    dataset: str = key("ml-100k", "the dataset's folder under each root (and the run folder's name)",
                       Rule("a dataset name (a folder under data.root: no path separators, not '.' or '..')",
                            _plain_name))
    format: str = key("atomic", "how the dataset is stored")
    root: str = key("data", "where datasets live and where fetched ones are written", TEXT)
    extra_roots: list[str] = key([], "read-only folders also searched, in order, before fetching (e.g. "
                                 "[/data/recbole])",
                                 Rule("a list of folders (or [])", lambda v: is_list(v) and all(map(is_text, v))))
    max_item_list_length: int = key(50, "history window of each example (RecBole's MAX_ITEM_LIST_LENGTH)",
                                    integer())
    num_workers: int = key(0, "DataLoader workers (batches are tensor slices; 0 is fastest here)", integer(0))
    bucket_batches: int | None = key(
        8, ">0: sort lengths within chunks of this many shuffled train batches (less padding); 0: plain random "
        "batches (RecBole's)", integer(0, expect="an integer >= 0 (0: off)"))
    eval_candidates: str | None = key(None, "an eval_candidates.npz from a run folder: score uniN/popN on exactly "
                                      "those candidates (null: draw them once from eval_candidates_seed)", TEXT)
    eval_candidates_seed: int = key(2020, "seeds the one draw of uniN/popN candidates, apart from seed, so every "
                                    "epoch, seed and trial of a study is scored on the same candidates",
                                    integer(0, MAX_SEED, expect=f"an integer in [0, {MAX_SEED}]"))


def _interval_ok(value: Any) -> bool:

    try:
        parse_intervals(value)
    except ValueError:
        return False
    return isinstance(value, str)


def _val_interval_ok(value: Any) -> bool:
    return value is None or (isinstance(value, Mapping) and all(
        isinstance(k, str) and ((isinstance(v, str) and _interval_ok(v)) or (is_list(v) and len(v) > 0))
        for k, v in value.items()))


INTERVAL = Rule("RecBole's interval string, e.g. \"[5,inf)\" (several joined by ;)", _interval_ok)


@dataclass
class AtomicDataConfig(DataConfig):
    """A RecBole atomic ``.inter`` file with RecBole's sequential leave-one-out protocol (data=ml-100k)."""

    format: str = key("atomic", "atomic: <root>/<dataset>/<dataset>.inter, RecBole's file (sessions too: set "
                      "user_id_field=session_id)", one_of(("atomic",)))
    download: bool = key(True, "fetch ml-100k when it is in none of the roots", BOOLEAN)
    user_id_field: str = key("user_id", "RecBole's USER_ID_FIELD", TEXT)
    item_id_field: str = key("item_id", "RecBole's ITEM_ID_FIELD", TEXT)
    time_field: str = key("timestamp", "RecBole's TIME_FIELD (orders each user's interactions)", TEXT)
    time_order: str = key("recbole", "recbole: same-time ties ordered as RecBole 1.2.1 orders them (its float32 "
                          "times: RecBole's rows exactly); exact: by the times as read, ties only when equal",
                          one_of(TIME_ORDERS))
    normalize_all: bool | None = key(None, "RecBole's normalize_all: min-max scale the time field before RecBole's "
                                     "float32; null: as RecBole, on for ml-100k (its dataset config), off "
                                     "otherwise. Decides only which ties time_order=recbole makes",
                                     Rule("null, true or false", lambda v: v is None or isinstance(v, bool)))
    rm_dup_inter: str | None = key(None, "RecBole's rm_dup_inter: first or last keeps one row per (user, item), "
                                   "after a sort by time; null keeps all", one_of((None, "first", "last")))
    val_interval: Any = key(None, "RecBole's val_interval: {field: \"[3,inf)\"} keeps rows whose float field is "
                            "inside, {field: [a, b]} those whose token field is one of them",
                            Rule("null or {field: interval string (float fields) or list of tokens}",
                                 _val_interval_ok))
    user_inter_num_interval: str = key("[0,inf)", "RecBole's: keep users whose interaction count is inside, "
                                       "repeated with items until stable (\"[5,inf)\": 5-core)", INTERVAL)
    item_inter_num_interval: str = key("[0,inf)", "RecBole's: keep items whose interaction count is inside "
                                       "(k-core with the users)", INTERVAL)
    benchmark_filename: list[str] | None = key(
        None, "RecBole's: pre-split <dataset>.<part>.inter files for train, valid and test (e.g. [train, valid, "
        "test]) whose rows are examples already (<item>_list history + item): no filter, window or split",
        Rule("null or three part names, e.g. [train, valid, test]",
             lambda v: v is None or (is_list(v) and len(v) == 3 and all(_plain_name(p) for p in v))))
    filter_inter_by_user_or_item: bool = key(True, "RecBole's: needs .user/.item feature files, which NARM does "
                                             "not read, so it removes nothing (as in RecBole without them)", BOOLEAN)


@dataclass
class SessionDataConfig(DataConfig):
    """Session splits with the NARM paper's protocol (data=diginetica, yoochoose1_64, yoochoose1_4)."""

    dataset: str = key(REQUIRED, "prepared splits are looked for in <root>/<dataset>/",
                       Rule("a dataset name (a folder under data.root: no path separators, not '.' or '..')",
                            _plain_name))
    format: str = key("auto", "session_text (train_sessions.txt + test.tsv), session_pickle (train.txt + test.txt), "
                      "raw (the click log, preprocessed here), auto (the first found)", one_of(SESSION_FORMATS))
    raw_dataset: str | None = key(None, "which raw click log and preprocessing", one_of((None, *RAW_DATASETS)))
    raw_folder: str | None = key(None, "folder under each root holding the raw file",
                                 Rule("null or a folder name under data.root (no path separators)",
                                      lambda v: v is None or _plain_name(v)))
    sort_by_timeframe: bool = key(True, "DIGINETICA: order clicks by timeframe within a session (false: the "
                                  "original paper's data)", BOOLEAN)
    fraction: int = key(1, "YOOCHOOSE: keep the most recent 1/fraction of the augmented training examples",
                        integer(expect="a positive integer (1, 4, 64)"))
    test_days: int | None = key(None, "null: the standard 7 (DIGINETICA) / 1 (YOOCHOOSE) last days are the test "
                                "set", integer())
    min_item_support: int = key(5, "drop items clicked fewer times than this", integer())
    tie_order: str = key("first_seen", "order of sessions with the same date: first_seen, or python2 (SR-GNN's "
                         "published pickles)", one_of(TIE_ORDERS))
    cache_dir: str | None = key("~/.cache/narm-lightning", "preprocessed raw splits, keyed by file content and "
                                "settings (null: no cache)", TEXT)
    valid_ratio: float = key(0.1, "seeded random share of the training examples used for validation (the paper's "
                             "10%; 0: none, test the last epoch)",
                             number(at_least=0, below=1, expect="a share of the training examples in [0, 1) (0: no "
                                    "validation, train on all and test the last epoch)"))


def _time_format_ok(value: Any) -> bool:
    return is_text(value) and (value in ("auto", "s", "ms", "iso") or "%" in value)


def _column(value: Any) -> bool:
    return is_text(value) and value == value.strip()


COLUMN = Rule("a column name of the file", _column)


@dataclass
class ClicksDataConfig(DataConfig):
    """Your own click log, one row a click: CSV, TSV or Parquet (data=clicks; docs/your-data.md)."""

    dataset: str = key("clicks", "the data's name in the run folder and W&B (data=clicks sets it to the file's name)",
                       Rule("a name (no path separators, not '.' or '..')", _plain_name))
    path: str = key(REQUIRED, "the click log: a .csv, .tsv (.txt) or .parquet file, absolute or relative to where "
                    "the command runs", TEXT)
    format: str = key("auto", "auto (from the file's suffix: .csv, .tsv/.txt, .parquet), csv, tsv or parquet",
                      one_of(CLICK_FORMATS))
    delimiter: str | None = key(None, "CSV/TSV field separator (null: sniffed among , ; TAB | from the first lines)",
                                Rule("null or one character, e.g. ';'", lambda v: v is None or (
                                    isinstance(v, str) and len(v) == 1 and v not in "\n\r\"")))
    column_names: list[str] | None = key(None, "the columns of a file without a header row, in order (null: the "
                                         "first row names them)",
                                         Rule("null or a list of column names, e.g. [session_id,timestamp,item_id]",
                                              lambda v: v is None or (is_list(v) and len(v) > 0
                                                                      and all(map(_column, v)))))
    session_field: str | None = key("session_id", "the column naming each click's session (null: user_field)",
                                    Rule("null or a column name", lambda v: v is None or _column(v)))
    user_field: str | None = key(None, "instead of session_field: the column naming each click's user (a user's "
                                 "clicks are one sequence)", Rule("null or a column name",
                                                                  lambda v: v is None or _column(v)))
    item_field: str = key("item_id", "the column naming the clicked item", COLUMN)
    time_field: str = key("timestamp", "the column with each click's time", COLUMN)
    time_format: str = key("auto", "auto (numbers: epoch seconds, milliseconds from 1e11 on; text: ISO 8601 dates "
                           "or times), s, ms, iso, or a strptime format such as '%d/%m/%Y %H:%M'",
                           Rule("auto, s, ms, iso or a strptime format (with %)", _time_format_ok))
    order_field: str | None = key(None, "the column ordering a session's clicks (null: time_field; equal values "
                                  "keep file order)", Rule("null or a column name", lambda v: v is None or _column(v)))
    split: str = key("time", "time: the NARM paper's session protocol (test: the sessions of the last test_days "
                     "days); leave_one_out: RecBole's (each session's last clicks validate and test)",
                     one_of(CLICK_SPLITS))
    test_days: int = key(7, "split=time: sessions ending in the last this many days are the test set", integer())
    min_item_support: int = key(5, "split=time: drop items clicked fewer times than this", integer())
    fraction: int = key(1, "split=time: keep the most recent 1/fraction of the training examples (YOOCHOOSE's "
                        "1/64 and 1/4)", integer(expect="a positive integer (1 keeps all)"))
    valid_ratio: float = key(0.1, "split=time: seeded random share of the training examples used for validation",
                             number(at_least=0, below=1, expect="a share of the training examples in [0, 1) (0: no "
                                    "validation, train on all and test the last epoch)"))
    max_items: int = key(500_000, "refuse a log with more items than this once filtered (the output layer scores "
                         "every item for every example)", integer())
    cache_dir: str | None = key("~/.cache/narm-lightning", "prepared splits, keyed by file content and settings "
                                "(null: no cache)", TEXT)


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


# ---- serving -----------------------------------------------------------------------------------------------------


# ---- reading the schema ------------------------------------------------------------------------------------------




def data_schema(data: Any) -> type:
    """Which data schema a composed ``data`` node follows: the atomic one has the id-field keys, a click log a
    path."""
    if "user_id_field" in data:
        return AtomicDataConfig
    return ClicksDataConfig if "path" in data else SessionDataConfig


def file_stem(path: Any) -> str:
    """``data=clicks``'s dataset name: the log's file name without its suffix (resolver ``narm.file_stem``)."""
    from pathlib import PurePath

    stem = PurePath(str(path)).stem.strip()
    return stem if stem not in ("", ".", "..") else "clicks"
