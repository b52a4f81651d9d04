import pytest

from libcem.config import (
    ConfigError,
    build_config,
    dumps_toml,
    from_dict,
    load_config,
    parse_override,
    to_dict,
)
from libcem.generative.training.tokenizer import TokenizerRunConfig


def test_toml_round_trip(tmp_path):
    cfg = build_config(TokenizerRunConfig, {}, ["optim.lr=2e-4", "model.channel_mult=[1, 2, 2]", "data.source=\"digits\""])
    path = tmp_path / "config.toml"
    path.write_text(dumps_toml(cfg))
    again = load_config(TokenizerRunConfig, path)
    assert again == cfg
    assert again.optim.lr == 2e-4 and again.model.channel_mult == (1, 2, 2)
    assert dumps_toml(again) == dumps_toml(cfg)


def test_dict_round_trip_of_defaults():
    cfg = TokenizerRunConfig()
    assert from_dict(TokenizerRunConfig, to_dict(cfg)) == cfg


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="optim.lrr"):
        build_config(TokenizerRunConfig, {}, ["optim.lrr=1e-3"])
    with pytest.raises(ConfigError, match="unknown config key 'bogus'"):
        build_config(TokenizerRunConfig, {"bogus": {}})


def test_bad_values_say_what_to_fix():
    with pytest.raises(ConfigError, match="optim.lr"):
        build_config(TokenizerRunConfig, {}, ["optim.lr=-1"])
    with pytest.raises(ConfigError, match="train.steps' must be an integer"):
        build_config(TokenizerRunConfig, {}, ["train.steps=many"])
    with pytest.raises(ConfigError, match="train.precision"):
        build_config(TokenizerRunConfig, {}, ["train.precision=fp8"])
    with pytest.raises(ConfigError, match="data.source|unknown data source"):
        build_config(TokenizerRunConfig, {}, ["data.source=imagenet"])


def test_override_values_are_parsed_as_toml():
    assert parse_override("optim.lr=2e-4") == (["optim", "lr"], 2e-4)
    assert parse_override("data.source=folder:/tmp/x") == (["data", "source"], "folder:/tmp/x")
    assert parse_override("train.ema_decay=0") == (["train", "ema_decay"], 0)
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("optim.lr")
