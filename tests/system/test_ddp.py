"""DDP: per-rank batch sharding, and evaluation over 2 gloo processes equal to one process (to 1e-6)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, RandomSampler

from narm_lightning.config.validation import validate
from narm_lightning.data.datamodule import LengthBucketBatchSampler, RankShard, SequentialDataModule, eval_rows
from narm_lightning.data.protocol import Examples, SequentialData
from narm_lightning.errors import ConfigError
from narm_lightning.training.run import train
from tests.helpers import compose_train, tiny_overrides

REPO = Path(__file__).resolve().parents[2]


def _shards(batches: object, world: int) -> list[list[list[int]]]:
    return [list(RankShard(batches, rank, world)) for rank in range(world)]  # type: ignore[arg-type]


@pytest.mark.parametrize("world", [2, 3])
def test_rank_shards_split_every_global_batch_without_overlap(world: int) -> None:
    def global_batches() -> BatchSampler:
        return BatchSampler(RandomSampler(range(103), generator=torch.Generator().manual_seed(7)), 10, False)

    expected = list(global_batches())
    shards = [list(RankShard(global_batches(), rank, world)) for rank in range(world)]
    assert all(len(s) == len(expected) for s in shards)  # every rank takes the same number of steps
    for i, batch in enumerate(expected):
        parts = [s[i] for s in shards]
        assert sum(parts, []) == batch
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_short_final_batch_gives_every_rank_a_row() -> None:
    batches = [[0, 1, 2, 3], [4]]  # the last global batch has fewer rows than ranks
    shards = _shards(batches, 3)
    assert [s[1] for s in shards] == [[4], [4], [4]]
    assert [s[0] for s in shards] == [[0], [1], [2, 3]]


def test_rank_shard_forwards_set_epoch_to_the_bucketing_sampler() -> None:
    lengths = torch.randint(1, 50, (500,), generator=torch.Generator().manual_seed(0))
    inner = LengthBucketBatchSampler(lengths, batch_size=32, bucket_batches=4, seed=1)
    shard = RankShard(inner, 0, 2)
    shard.set_epoch(0)
    first = list(shard)
    shard.set_epoch(1)
    assert inner.epoch == 1 and list(shard) != first


@pytest.mark.parametrize("n_rows,world", [(943, 2), (10, 3), (2, 4), (0, 2)])
def test_eval_blocks_partition_the_rows_exactly(n_rows: int, world: int) -> None:
    blocks = [list(eval_rows(n_rows, rank, world)) for rank in range(world)]
    assert sum(blocks, []) == list(range(n_rows))


def _data(n: int) -> SequentialData:
    ex = Examples(item_seq=torch.arange(1, n + 1).view(-1, 1), item_seq_len=torch.ones(n, dtype=torch.long),
                  target=torch.arange(n) + 1)
    return SequentialData(train=ex, valid=ex, test=ex, n_items=n + 2, item_tokens=np.array(["[PAD]"]))


def test_datamodule_gives_each_rank_its_own_rows() -> None:
    seen_valid: list[int] = []
    train_rows: list[list[int]] = []
    for rank in range(2):
        dm = SequentialDataModule(_data(25), train_batch_size=5, eval_batch_size=4, seed=0,
                                  generator=torch.Generator().manual_seed(3))
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2)  # what Lightning attaches under DDP
        seen_valid += [int(t) for _, _, target in dm.val_dataloader() for t in target]
        train_rows.append([int(t) for _, _, target in dm.train_dataloader() for t in target])
    assert seen_valid == list(range(1, 26))  # every valid row once, none repeated
    assert sorted(train_rows[0] + train_rows[1]) == list(range(1, 26))  # one epoch: each row on one rank
    assert not set(train_rows[0]) & set(train_rows[1])


def test_config_refuses_several_nodes_without_ddp_and_unknown_strategies(tiny_root: Path) -> None:
    with pytest.raises(ConfigError, match="trainer.num_nodes is 2 with trainer.strategy 'auto'"):
        validate(compose_train(tiny_overrides(tiny_root, "trainer.num_nodes=2")))
    with pytest.raises(ConfigError, match="trainer.strategy is 'ddp_spawn'; expected one of auto, ddp"):
        validate(compose_train(tiny_overrides(tiny_root, "trainer.strategy=ddp_spawn")))
    validate(compose_train(tiny_overrides(tiny_root, "trainer=ddp", "trainer.num_nodes=2")))


def _run_train(args: list[str], run_dir: Path) -> dict:
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *args, f"hydra.run.dir={run_dir}"],
                          cwd=run_dir.parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((run_dir / "results.json").read_text())


def _assert_same_metrics(a: dict, b: dict) -> None:
    pairs = [(a[s], b[s], s) for s in ("best_valid", "test")]
    pairs += [(a["extra_tests"][m], b["extra_tests"][m], m) for m in a.get("extra_tests") or {}]
    for mine, theirs, split in pairs:
        assert mine.keys() == theirs.keys()
        for key, value in mine.items():
            assert theirs[key] == pytest.approx(value, abs=1e-6), (split, key)


def test_ddp_training_on_two_gloo_processes_matches_one_process_evaluation(tiny_root: Path, tmp_path: Path) -> None:
    args = tiny_overrides(tiny_root, "trainer=ddp", "trainer.devices=2", "epochs=2", "eval_batch_size=16",
                          gru_impl="auto")  # the fused GRU under DDP: each rank compiles its kernels
    ddp = _run_train(args, tmp_path / "ddp")
    run = tmp_path / "ddp"
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "best.ckpt").is_file()
    assert ddp["epochs_run"] == 2
    assert (run / "train_ddp_process_1.log").is_file()  # Lightning really started a second process
    # the DDP run's own numbers (valid at its best epoch, test of best.ckpt: each over 2 ranks) against one
    # process evaluating the same best.ckpt
    cfg = compose_train(tiny_overrides(tiny_root, "epochs=0", f"init_from={ddp['best_checkpoint']}"))
    single = train(cfg, output_dir=tmp_path / "single")
    _assert_same_metrics(ddp, single)


def test_recbole_checkpoint_evaluated_by_one_and_two_gloo_processes_agrees(shared_data: Path, tmp_path: Path) -> None:
    pth = shared_data / "recbole-checkpoint" / "NARM-ml-100k-seed2020.pth"
    # all of RecBole's metrics: the beyond-accuracy ones sum per-item counts across ranks, exact like the rest;
    # valid on uni100 and test also on pop100: each row's candidates travel with it to its rank
    common = ["eval_args={mode:{valid:uni100,test:full}}", "extra_test_modes=[pop100]",
              f"data.extra_roots=[{shared_data}]", "data.download=false", "logger=none", "epochs=0",
              f"init_from={pth}", "trainer.enable_progress_bar=false", "eval_batch_size=128", "topk=[5,10]",
              "metrics=[Recall,MRR,NDCG,Hit,Precision,MAP,ItemCoverage,AveragePopularity,GiniIndex,ShannonEntropy,"
              "TailPercentage]"]
    single = train(compose_train(common), output_dir=tmp_path / "single")
    ddp = _run_train([*common, "trainer=ddp", "trainer.devices=2"], tmp_path / "ddp")
    _assert_same_metrics(single, ddp)
    assert round(single["test"]["recall@10"], 4) == 0.1220  # RecBole's printed figure: both are right, not only equal
    assert len(single["test"]) == 22 and 0 < single["test"]["giniindex@10"] < 1
    assert single["best_valid"]["recall@10"] > 0.5 and len(single["extra_tests"]["pop100"]) == 22  # sampled


def test_ddp_inside_a_sweep_is_refused_with_a_clear_message(tiny_root: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "-m", *tiny_overrides(tiny_root, "trainer=ddp"),
                           f"hydra.sweep.dir={tmp_path / 'multi'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "trainer.strategy is 'ddp' inside a sweep (-m)" in proc.stderr
    assert "Traceback" not in proc.stderr
