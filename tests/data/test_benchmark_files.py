"""RecBole's ``benchmark_filename``: pre-split ``<name>.<part>.inter`` files whose rows are examples already."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from narm_lightning.config.validation import config_problems
from narm_lightning.errors import DataError
from narm_lightning.recbole.config import apply_recbole_config
from narm_lightning.training.builders import load_data
from narm_lightning.training.run import train
from tests.helpers import compose_train

HEADER = "session_id:token\titem_id_list:token_seq\titem_id:token"


def write_parts(root: Path, parts: dict[str, list[tuple[str, str, str]]], name: str = "bench") -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for part, rows in parts.items():
        (folder / f"{name}.{part}.inter").write_text("\n".join([HEADER, *("\t".join(r) for r in rows)]) + "\n")
    return root


def overrides(root: Path, *extra: str) -> list[str]:
    return ["data.dataset=bench", f"data.root={root}", "data.extra_roots=[]", "data.download=false",
            "data.benchmark_filename=[train,valid,test]", "data.user_id_field=session_id", "logger=none",
            "trainer.enable_progress_bar=false", "model.embedding_size=8", "model.hidden_size=8", *extra]


def test_rows_are_the_examples_and_item_ids_follow_recboles_remap(tmp_path) -> None:
    root = write_parts(tmp_path, {"train": [("s1", "a b", "c"), ("s2", "d", "a")], "valid": [("s3", "c e", "b")],
                                  "test": [("s4", "e", "f")]})
    data = load_data(compose_train(overrides(root)))
    # RecBole factorizes the targets of every file first (c, a, b, f), then the history tokens (d, e new)
    assert list(data.item_tokens) == ["[PAD]", "c", "a", "b", "f", "d", "e"]
    assert data.train.item_seq.tolist() == [[2, 3], [5, 0]] and data.train.item_seq_len.tolist() == [2, 1]
    assert data.train.target.tolist() == [1, 2]
    assert data.valid.item_seq.tolist() == [[1, 6]] and data.valid.target.tolist() == [3]
    assert data.test.item_seq.tolist() == [[6, 0]] and data.test.target.tolist() == [4]
    assert len(data.files) == 3 and data.stats["n_interactions"] == 4


def test_a_run_on_benchmark_files_trains_and_says_so_in_its_card(tmp_path) -> None:
    rng = np.random.default_rng(0)
    rows = {part: [(f"{part}{i}", " ".join(f"i{(s + t) % 20}" for t in range(4)), f"i{(s + 4) % 20}")
                   for i, s in enumerate(rng.integers(0, 20, size=n))]
            for part, n in (("train", 200), ("valid", 30), ("test", 30))}
    results = train(compose_train(overrides(write_parts(tmp_path, rows), "epochs=3", "train_batch_size=32")),
                    output_dir=tmp_path / "run")
    assert results["protocol"]["split"] == {"benchmark_filename": ["train", "valid", "test"]}
    assert len(results["protocol"]["files"]) == 3 and results["dataset"]["n_train"] == 200
    assert results["test"]["recall@10"] > 0.5  # learnable: next item = last + 1


def test_bad_benchmark_files_are_one_paragraph(tmp_path) -> None:
    root = write_parts(tmp_path, {"train": [("s1", "a b c", "d")], "valid": [("s2", "a", "b")],
                                  "test": [("s3", "c", "b")]})
    with pytest.raises(DataError, match="bench.train.inter: a history holds 3 items, more than "
                                        "data.max_item_list_length=2; RecBole keeps benchmark histories whole, so "
                                        "set data.max_item_list_length=3"):
        load_data(compose_train(overrides(root, "data.max_item_list_length=2")))
    write_parts(root, {"test": [("s3", "c", "b"), ("s4", "", "b")]})
    with pytest.raises(DataError, match=r"bench.test.inter, line 3: the history is empty"):
        load_data(compose_train(overrides(root)))
    (root / "bench" / "bench.valid.inter").unlink()
    with pytest.raises(DataError, match=r"bench.valid.inter not found beside"):
        load_data(compose_train(overrides(root)))
    with pytest.raises(DataError, match="no other.train.inter"):
        load_data(compose_train(overrides(root, "data.dataset=other")))
    problems = " ".join(config_problems(compose_train(overrides(root, "data.user_inter_num_interval='[5,inf)'"))))
    assert "with interaction filters (user_inter_num_interval); expected none" in problems
    assert "three part names" in " ".join(config_problems(compose_train(overrides(root) + [
        "data.benchmark_filename=[train,test]"])))


def test_recboles_session_config_maps_onto_benchmark_files() -> None:
    recbole = {"benchmark_filename": ["train", "valid", "test"], "alias_of_item_id": ["item_id_list"],
               "USER_ID_FIELD": "session_id", "load_col": {"inter": ["session_id", "item_id_list", "item_id"]}}
    cfg = apply_recbole_config(compose_train(["logger=none"]), recbole)
    assert list(cfg.data.benchmark_filename) == ["train", "valid", "test"] and cfg.data.user_id_field == "session_id"
