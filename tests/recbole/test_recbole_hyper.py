from __future__ import annotations

import math

import pytest

from narm_lightning.errors import ConfigError
from narm_lightning.recbole.hyper import parse_hyper_line, read_hyper_file

SEED_HYPER_TEST = """\
learning_rate choice [0.01,0.005,0.001,0.0005,0.0001]
hidden_size choice [128]
n_layers choice [1,2]
dropout_probs choice ['[0.25,0.5]','[0.2,0.2]','[0.1,0.2]']
"""


def test_seed_hyper_test_maps_onto_groups(tmp_path) -> None:
    path = tmp_path / "hyper.test"
    path.write_text(SEED_HYPER_TEST)
    assert read_hyper_file(path) == {
        "learning_rate": "choice(0.01,0.005,0.001,0.0005,0.0001)",
        "hidden_size": "choice(128)",
        "n_layers": "choice(1,2)",
        "dropout_probs": "choice(default,light,lightest)",
    }


def test_continuous_ranges() -> None:
    assert parse_hyper_line("learning_rate uniform 0.001,0.01", 1, "f") == ("learning_rate", "interval(0.001,0.01)")
    key, expr = parse_hyper_line("learning_rate loguniform -8,0", 1, "f")
    assert key == "learning_rate" and expr == f"tag(log,interval({math.exp(-8)!r},{math.exp(0)!r}))"
    assert parse_hyper_line("embedding_size quniform 32,128,32", 1, "f") == ("model.embedding_size",
                                                                            "choice(32,64,96,128)")
    # a list value with no named option is swept by key
    assert parse_hyper_line("dropout_probs choice ['[0.3,0.3]']", 1, "f") == ("model.dropout_probs",
                                                                             "choice([0.3,0.3])")


@pytest.mark.parametrize(
    "line",
    ["learning_rate choice", "learning_rate choice [__import__('os')]", "lr uniform 1", "lr uniform a,b",
     "lr quniform 1,2,0", "lr normal 0,1", "lr choice []"],
)
def test_bad_lines_are_clear_errors_and_never_evaluated(line) -> None:
    with pytest.raises(ConfigError, match="f, line 3"):
        parse_hyper_line(line, 3, "f")


def test_seed_hyper_test_gives_the_default_sweep_space(tmp_path) -> None:
    import yaml

    from narm_lightning.recbole.hyper import CONF_DIR

    path = tmp_path / "hyper.test"
    path.write_text(SEED_HYPER_TEST)
    default = yaml.safe_load((CONF_DIR / "search" / "hyper_test.yaml").read_text())["params"]
    assert read_hyper_file(path) == default


def test_params_file_flag_becomes_the_search_space(tmp_path) -> None:
    from narm_lightning.recbole.hyper import expand_params_file_arg

    path = tmp_path / "hyper.test"
    path.write_text(SEED_HYPER_TEST)
    argv = ["sweep.py", "-m", f"--params-file={path}", "learning_rate=0.01,0.001"]
    assert expand_params_file_arg(argv) == [
        "sweep.py", "-m", "learning_rate=0.01,0.001", "hydra.sweeper.params=null",
        "hidden_size=choice(128)", "n_layers=choice(1,2)", "dropout_probs=choice(default,light,lightest)",
    ]
    assert expand_params_file_arg(["sweep.py", "-m"]) == ["sweep.py", "-m"]
    with pytest.raises(ConfigError, match="needs a file"):
        expand_params_file_arg(["sweep.py", "--params-file"])
