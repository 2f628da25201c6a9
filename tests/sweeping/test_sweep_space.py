"""Hydra override grammar -> Optuna distributions, and sampled values -> overrides."""

from __future__ import annotations

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from narm_lightning.errors import ConfigError
from narm_lightning.sweeping.space import format_value, parse_search_space


def dist(text: str) -> object:
    space = parse_search_space({}, [f"p={text}"])
    return space.distributions["p"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,2,3", CategoricalDistribution([1, 2, 3])),
        ("choice(a,b)", CategoricalDistribution(["a", "b"])),
        ("choice(0.01,0.001)", CategoricalDistribution([0.01, 0.001])),
        ("range(1,4)", CategoricalDistribution([1, 2, 3])),
        ("range(0.5,1.5,0.5)", CategoricalDistribution([0.5, 1.0])),
        ("interval(0.1,0.5)", FloatDistribution(0.1, 0.5)),
        ("tag(log,interval(1e-4,1e-1))", FloatDistribution(1e-4, 1e-1, log=True)),
        ("int(interval(1,8))", IntDistribution(1, 8)),
        ("tag(log,int(interval(1,64)))", IntDistribution(1, 64, log=True)),
    ],
)
def test_grammar_maps_to_distribution(text: str, expected: object) -> None:
    assert dist(text) == expected


def test_command_line_wins_and_fixed_overrides_pass_through() -> None:
    space = parse_search_space(
        {"lr": "choice(0.1,0.2)", "depth": "1,2"}, ["lr=interval(0.1,0.2)", "epochs=3", "+extra='a b'"]
    )
    assert space.distributions == {
        "lr": FloatDistribution(0.1, 0.2),
        "depth": CategoricalDistribution([1, 2]),
    }
    assert space.fixed_overrides == ["epochs=3", "+extra='a b'"]


def test_group_swept_by_name_is_categorical_of_option_names() -> None:
    space = parse_search_space({"dropout_probs": "choice(default,light,lightest)"}, [])
    assert space.distributions["dropout_probs"] == CategoricalDistribution(["default", "light", "lightest"])


def test_grid_refuses_continuous_params_naming_the_param() -> None:
    space = parse_search_space({"lr": "interval(0.1,0.2)", "depth": "1,2"}, [])
    assert space.size() is None
    with pytest.raises(ConfigError, match="'lr' is continuous"):
        space.grid()
    assert parse_search_space({"a": "1,2,3", "b": "x,y"}, []).size() == 6


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"lr": "interval(0.1"}, "hydra.sweeper.params.lr"),
        ({"lr": "tag(log,interval(0,1))"}, "start > 0"),
        ({"lr": "tag(foo,interval(0.1,1))"}, "unknown tag"),
        ({"lr": "choice([a,2],[3])"}, "must be scalars .* or lists of numbers"),
        ({"lr": "choice({a:1},2)"}, "must be scalars"),
        ({"lr": "interval(1,0.5)"}, "is empty"),
    ],
)
def test_bad_grammar_raises_config_error_naming_the_key(params: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_search_space(params, [])


@pytest.mark.parametrize("value", [0.001, 1e-5, 3, True, None, "light", "a b", "1.5", "null", "x,y", "it's"])
def test_format_value_round_trips_through_hydra_grammar(value: object) -> None:
    parsed = OverridesParser.create().parse_overrides([f"k={format_value(value)}"])[0]
    assert not parsed.is_sweep_override()
    assert parsed.value() == value


def test_a_study_is_named_after_the_swept_datasets_not_the_default_one() -> None:
    """narm-sweep names a derived study after data.dataset (study_prefix_key): the config's value, unless the space
    sweeps that key or its group, where the swept values name it."""
    from omegaconf import OmegaConf

    from narm_lightning.sweeping.space import study_prefix_from

    config = OmegaConf.create({"data": {"dataset": "ml-100k"}, "learning_rate": 0.001})
    key = "data.dataset"
    assert study_prefix_from(config, key, parse_search_space({}, ["learning_rate=0.1,0.01"])) == "ml-100k"
    assert study_prefix_from(config, key, parse_search_space({}, ["data=diginetica,yoochoose1_64"])) == (
        "diginetica+yoochoose1_64")  # the group the key lies in
    assert study_prefix_from(config, key, parse_search_space({}, ["data.dataset=a,b", "lr=1,2"])) == "a+b"
    assert study_prefix_from(config, key, parse_search_space({}, ["data.dataset_x=a,b"])) == "ml-100k"  # not a parent
    many = ",".join(f"dataset_number_{i}" for i in range(9))
    assert study_prefix_from(config, key, parse_search_space({}, [f"data={many}"])) == "9-data"  # a name stays short
    assert study_prefix_from(config, None, parse_search_space({}, ["data=a,b"])) is None
    assert study_prefix_from(OmegaConf.create({}), key, parse_search_space({}, ["lr=1,2"])) is None
