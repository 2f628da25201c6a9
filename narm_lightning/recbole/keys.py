"""Every RecBole 1.2.1 key a sequential model's config can hold, and what it means here: one table.

Each key is one of three things. **Ours**: it maps onto a key of this project (``learning_rate``,
``MAX_ITEM_LIST_LENGTH`` -> ``data.max_item_list_length``), some through a conversion (``use_gpu``). **Same**: this
project always does what the key's accepted values mean (``repeatable: True``), or the key has no effect on NARM
in RecBole either (knowledge-graph fields); other values are refused with the reason. **Unknown**: not a key of
RecBole's general config nor of its NARM (a typo, another model's key): refused, with the nearest name. Nothing
is ignored: a RecBole file either means the same run here or it is refused (``config.map_recbole_config``).

The table is what ``docs/recbole-keys.md`` is generated from (``make docs``), so the page cannot drift.
Read from RecBole 1.2.1's ``properties/overall.yaml``, ``properties/dataset/sample.yaml``,
``properties/model/NARM.yaml``, ``quick_start_config/sequential.yaml`` and the config reads in its source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ANY = None  # accept: every value (the key changes nothing a NARM run computes)


@dataclass(frozen=True)
class RecBoleKey:
    """One RecBole key: ``ours`` (our dotted key) with an optional ``convert``; else ``accept`` (the values that
    mean what this project always does; ``ANY``: all) and ``why`` (said in the docs and in a refusal)."""

    name: str
    section: str
    ours: str | None = None
    accept: tuple[Any, ...] | None = ANY
    why: str = ""
    convert: Callable[[Any], Any] | None = None

    def accepts(self, value: Any) -> bool:
        return self.accept is ANY or any(_same(value, a) for a in self.accept)


def _same(value: Any, accepted: Any) -> bool:
    """YAML values compared as RecBole's config would hold them (``'0'`` and ``0`` for gpu_id are one)."""
    if isinstance(accepted, str) and not isinstance(value, str):
        return str(value) == accepted
    return type(value) is type(accepted) and value == accepted or (value is None and accepted is None)


def _use_gpu(value: Any) -> Any:
    """RecBole's use_gpu: True means the GPU when there is one (``accelerator: auto``), False the CPU."""
    return "auto" if value is True else "cpu" if value is False else value


def _enable_amp(value: Any) -> Any:
    """RecBole's enable_amp: autocast (bf16 on a CPU, fp16 on a GPU) or fp32; here bf16 both ways (no scaler)."""
    return "bf16-mixed" if value is True else "32-true" if value is False else value


S_ENV, S_TRAIN, S_EVAL, S_DATA, S_MODEL = "environment", "training", "evaluation", "dataset", "model (NARM)"
DERIVED = "set by RecBole itself from other keys (a file's value is overwritten there too)"
KG = "knowledge-graph models only; RecBole's NARM never reads it"

KEYS: tuple[RecBoleKey, ...] = (
    # environment (overall.yaml)
    RecBoleKey("gpu_id", S_ENV, accept=("0", ""), why="choose GPUs with trainer.devices (e.g. trainer=gpu "
               "trainer.devices=[1])"),
    RecBoleKey("worker", S_ENV, "data.num_workers"),
    RecBoleKey("use_gpu", S_ENV, "trainer.accelerator", convert=_use_gpu,
               why="True: the GPU when there is one (accelerator auto); False: the CPU"),
    RecBoleKey("seed", S_ENV, "seed"),
    RecBoleKey("state", S_ENV, accept=("INFO", "info"), why="one console level here; hydra.verbose=true shows "
               "debug records"),
    RecBoleKey("reproducibility", S_ENV, why="every run is seeded and CPU runs are bit-reproducible either way; "
               "on CUDA set trainer.deterministic"),
    RecBoleKey("data_path", S_ENV, "data.root"),
    RecBoleKey("checkpoint_dir", S_ENV, accept=("saved",), why="checkpoints go in the run folder "
               "(<run>/checkpoints/; choose it with hydra.run.dir=...)"),
    RecBoleKey("show_progress", S_ENV, "trainer.enable_progress_bar"),
    RecBoleKey("save_dataset", S_ENV, accept=(False,), why="the examples are rebuilt in seconds from the file; "
               "nothing to save"),
    RecBoleKey("dataset_save_path", S_ENV, accept=(None,), why="no saved datasets are read (they are pickles: "
               "a file read here never runs code)"),
    RecBoleKey("save_dataloaders", S_ENV, accept=(False,), why="the batches are rebuilt in seconds; nothing to "
               "save"),
    RecBoleKey("dataloaders_save_path", S_ENV, accept=(None,), why="no saved dataloaders are read (they are "
               "pickles: a file read here never runs code)"),
    RecBoleKey("log_wandb", S_ENV, accept=(False,), why="choose W&B on the command line: logger=wandb"),
    RecBoleKey("wandb_project", S_ENV, accept=("recbole",), why="set logger.wandb.project with logger=wandb"),
    RecBoleKey("shuffle", S_ENV, accept=(True,), why="training batches are always shuffled (seeded)"),
    RecBoleKey("encoding", S_ENV, accept=("utf-8", "utf8"), why="atomic files are read as UTF-8"),
    RecBoleKey("nproc", S_ENV, accept=(1,), why="several processes: trainer=ddp trainer.devices=N "
               "(docs/scaling-out.md)"),
    RecBoleKey("world_size", S_ENV, accept=(-1, 1), why="set by the launcher here: trainer=ddp trainer.num_nodes"),
    RecBoleKey("offset", S_ENV, accept=(0,), why="set by the launcher here (docs/scaling-out.md)"),
    RecBoleKey("ip", S_ENV, accept=("localhost",), why="set MASTER_ADDR for several machines "
               "(docs/scaling-out.md)"),
    RecBoleKey("port", S_ENV, accept=("5678",), why="set MASTER_PORT for several machines (docs/scaling-out.md)"),
    RecBoleKey("local_rank", S_ENV, why=DERIVED),
    RecBoleKey("single_spec", S_ENV, why=DERIVED),
    RecBoleKey("device", S_ENV, why=DERIVED),
    RecBoleKey("MODEL_TYPE", S_ENV, why=DERIVED),
    RecBoleKey("MODEL_INPUT_TYPE", S_ENV, why=DERIVED),
    RecBoleKey("eval_type", S_ENV, why=DERIVED),
    # training (overall.yaml)
    RecBoleKey("epochs", S_TRAIN, "epochs"),
    RecBoleKey("train_batch_size", S_TRAIN, "train_batch_size"),
    RecBoleKey("learner", S_TRAIN, "learner"),
    RecBoleKey("learning_rate", S_TRAIN, "learning_rate"),
    RecBoleKey("train_neg_sample_args", S_TRAIN, "train_neg_sample_args"),
    RecBoleKey("eval_step", S_TRAIN, "eval_step"),
    RecBoleKey("stopping_step", S_TRAIN, "stopping_step"),
    RecBoleKey("clip_grad_norm", S_TRAIN, "clip_grad_norm"),
    RecBoleKey("weight_decay", S_TRAIN, "weight_decay"),
    RecBoleKey("loss_decimal_place", S_TRAIN, accept=(4,), why="the progress bar shows the loss as Lightning "
               "formats it"),
    RecBoleKey("require_pow", S_TRAIN, why="an EmbLoss option; NARM has no EmbLoss in RecBole either"),
    RecBoleKey("enable_amp", S_TRAIN, "trainer.precision", convert=_enable_amp,
               why="False: fp32 (32-true); True: bf16-mixed (RecBole autocasts to bf16 on a CPU, fp16 on a GPU)"),
    RecBoleKey("enable_scaler", S_TRAIN, accept=(False,), why="bf16 needs no gradient scaler; for fp16 set "
               "trainer.precision=16-mixed (Lightning scales)"),
    RecBoleKey("transform", S_TRAIN, accept=(None,), why="NARM takes no batch transform (RecBole's are for "
               "other models)"),
    # evaluation (overall.yaml, quick_start_config/sequential.yaml)
    RecBoleKey("eval_args", S_EVAL, "eval_args"),
    RecBoleKey("repeatable", S_EVAL, accept=(True,), why="sequential evaluation is repeatable (RecBole's sequential "
               "default); False changes which negatives may be drawn"),
    RecBoleKey("metrics", S_EVAL, "metrics"),
    RecBoleKey("topk", S_EVAL, "topk"),
    RecBoleKey("valid_metric", S_EVAL, "valid_metric"),
    RecBoleKey("valid_metric_bigger", S_EVAL, accept=(True,), why="valid_metric is an accuracy metric: higher is "
               "better"),
    RecBoleKey("eval_batch_size", S_EVAL, "eval_batch_size"),
    RecBoleKey("metric_decimal_place", S_EVAL, "metric_decimal_place"),
    RecBoleKey("tail_ratio", S_EVAL, "tail_ratio"),
    RecBoleKey("valid_neg_sample_args", S_EVAL, why=DERIVED + " (from eval_args.mode)"),
    RecBoleKey("test_neg_sample_args", S_EVAL, why=DERIVED + " (from eval_args.mode)"),
    # dataset (properties/dataset/sample.yaml)
    RecBoleKey("dataset", S_DATA, "data.dataset"),
    RecBoleKey("field_separator", S_DATA, accept=("\t",), why="atomic files are tab-separated here"),
    RecBoleKey("seq_separator", S_DATA, accept=(" ",), why="token_seq fields are space-separated here"),
    RecBoleKey("USER_ID_FIELD", S_DATA, "data.user_id_field"),
    RecBoleKey("ITEM_ID_FIELD", S_DATA, "data.item_id_field"),
    RecBoleKey("TIME_FIELD", S_DATA, "data.time_field"),
    RecBoleKey("RATING_FIELD", S_DATA, why="read only through val_interval (e.g. {rating: \"[3,inf)\"})"),
    RecBoleKey("seq_len", S_DATA, accept=(None,), why="it cuts token_seq fields to their first N entries; "
               "histories are cut to their last MAX_ITEM_LIST_LENGTH items"),
    RecBoleKey("LABEL_FIELD", S_DATA, why="labels of point-wise evaluation; NARM ranks, it reads no label"),
    RecBoleKey("threshold", S_DATA, why="turns a field into labels and removes no row; NARM reads no label"),
    RecBoleKey("NEG_PREFIX", S_DATA, why="a column name inside RecBole's pair-wise batches"),
    RecBoleKey("numerical_features", S_DATA, why="NARM embeds no feature fields"),
    RecBoleKey("load_col", S_DATA, why="only the user, item and time fields (and val_interval's) are read"),
    RecBoleKey("unload_col", S_DATA, why="only the user, item and time fields (and val_interval's) are read"),
    RecBoleKey("unused_col", S_DATA, why="only the user, item and time fields (and val_interval's) are read"),
    RecBoleKey("additional_feat_suffix", S_DATA, why="NARM reads no feature files"),
    RecBoleKey("rm_dup_inter", S_DATA, "data.rm_dup_inter"),
    RecBoleKey("val_interval", S_DATA, "data.val_interval"),
    RecBoleKey("filter_inter_by_user_or_item", S_DATA, "data.filter_inter_by_user_or_item"),
    RecBoleKey("user_inter_num_interval", S_DATA, "data.user_inter_num_interval"),
    RecBoleKey("item_inter_num_interval", S_DATA, "data.item_inter_num_interval"),
    RecBoleKey("alias_of_user_id", S_DATA, accept=(None,), why="it merges other fields' tokens into the user ids"),
    RecBoleKey("alias_of_item_id", S_DATA, accept=(None, ["item_id_list"]), why="[item_id_list] (what RecBole's "
               "session configs set with benchmark files: histories and targets share the item ids) is what "
               "benchmark_filename does here; other fields would merge their tokens into the item ids"),
    RecBoleKey("alias_of_entity_id", S_DATA, why=KG),
    RecBoleKey("alias_of_relation_id", S_DATA, why=KG),
    RecBoleKey("preload_weight", S_DATA, why="RecBole's NARM reads no preloaded vectors (start from weights with "
               "init_from)"),
    RecBoleKey("normalize_field", S_DATA, accept=(None,), why="NARM reads one float field, the time: "
               "normalize_all says whether it is scaled (which decides RecBole's same-time ties)"),
    RecBoleKey("normalize_all", S_DATA, "data.normalize_all"),
    RecBoleKey("discretization", S_DATA, accept=(None,), why="bucketing the time field would tie interactions "
               "and change the order"),
    RecBoleKey("ITEM_LIST_LENGTH_FIELD", S_DATA, why="a column name inside RecBole's batches"),
    RecBoleKey("LIST_SUFFIX", S_DATA, accept=("_list",), why="benchmark files' history column is "
               "<ITEM_ID_FIELD>_list"),
    RecBoleKey("MAX_ITEM_LIST_LENGTH", S_DATA, "data.max_item_list_length"),
    RecBoleKey("POSITION_FIELD", S_DATA, why="a column name for positional models; NARM has no positions"),
    RecBoleKey("benchmark_filename", S_DATA, "data.benchmark_filename"),
    RecBoleKey("HEAD_ENTITY_ID_FIELD", S_DATA, why=KG),
    RecBoleKey("TAIL_ENTITY_ID_FIELD", S_DATA, why=KG),
    RecBoleKey("RELATION_ID_FIELD", S_DATA, why=KG),
    RecBoleKey("ENTITY_ID_FIELD", S_DATA, why=KG),
    RecBoleKey("kg_reverse_r", S_DATA, why=KG),
    RecBoleKey("entity_kg_num_interval", S_DATA, why=KG),
    RecBoleKey("relation_kg_num_interval", S_DATA, why=KG),
    # model (properties/model/NARM.yaml)
    RecBoleKey("model", S_MODEL, accept=("NARM",), why="narm-lightning trains NARM only"),
    RecBoleKey("embedding_size", S_MODEL, "model.embedding_size"),
    RecBoleKey("hidden_size", S_MODEL, "model.hidden_size"),
    RecBoleKey("n_layers", S_MODEL, "model.n_layers"),
    RecBoleKey("dropout_probs", S_MODEL, "model.dropout_probs"),
    RecBoleKey("loss_type", S_MODEL, "model.loss_type"),
)

BY_NAME: dict[str, RecBoleKey] = {k.name: k for k in KEYS}
KEY_MAP: dict[str, str] = {k.name: k.ours for k in KEYS if k.ours}  # RecBole name -> our dotted key


def markdown_table() -> str:
    """``docs/recbole-keys.md``: every key, what it becomes here, and why where it is not a plain mapping."""
    lines = ["# Every RecBole 1.2.1 key, here", "",
             "Generated from `narm_lightning/recbole/keys.py` by `make docs`; a test fails when it is stale. A RecBole",
             "config file (`config_file=`) or `hyper.test` may hold any key below. **→ key**: the value becomes that",
             "key of ours. **accepted**: these values mean what this project always does (anything else is refused",
             "with the reason); **any value**: the key changes nothing a NARM run computes, in RecBole either. A key",
             "that is in no row (another model's, a typo) is refused with the nearest name.", ""]
    for section in dict.fromkeys(k.section for k in KEYS):
        lines += [f"## {section[0].upper()}{section[1:]}", "", "| RecBole key | here | why |", "|---|---|---|"]
        for k in (k for k in KEYS if k.section == section):
            if k.ours:
                here = f"→ `{k.ours}`"
            elif k.accept is ANY:
                here = "any value"
            else:
                here = "accepted: " + ", ".join(f"`{_show(v)}`" for v in k.accept)
            lines.append(f"| `{k.name}` | {here} | {k.why} |")
        lines.append("")
    return "\n".join(lines)


def _show(value: Any) -> str:
    return {None: "~", True: "True", False: "False", "\t": "\\t", " ": "' '", "": "''"}.get(value, str(value)) \
        if isinstance(value, (str, bool, type(None))) else str(value)


if __name__ == "__main__":
    print(markdown_table(), end="")
