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


def test_named_sizes_spell_out_under_explicit_settings_and_later_layers_win():
    from libcem.generative.models.sizes import PRIOR_SIZES, TOKENIZER_SIZES
    from libcem.generative.training.prior import PriorRunConfig

    cfg = build_config(PriorRunConfig, {"model": {"size": "large", "depth": 3}})
    assert (cfg.model.size, cfg.model.width, cfg.model.depth, cfg.model.heads) == ("large", 384, 3, 8)
    cfg = build_config(PriorRunConfig, {"model": {"size": "large"}}, ["model.size=\"tiny\""])
    assert (cfg.model.width, cfg.model.depth, cfg.model.heads) == (32, 1, 2)
    cfg = build_config(PriorRunConfig, {}, ["model.size=\"medium\"", "model.heads=4"])
    assert (cfg.model.width, cfg.model.depth, cfg.model.heads) == (256, 6, 4)
    for name, values in TOKENIZER_SIZES.items():
        tok = build_config(TokenizerRunConfig, {"model": {"size": name}}).model
        assert {k: getattr(tok, k) for k in values} == {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    for name in PRIOR_SIZES:
        assert build_config(PriorRunConfig, {}, [f"model.size=\"{name}\""]).model.size == name
    with pytest.raises(ConfigError, match="model.size.*tiny, small, medium, large"):
        build_config(PriorRunConfig, {}, ["model.size=\"huge\""])


def test_a_saved_config_with_a_size_rebuilds_the_same_config():
    from libcem.config import dumps_toml, tomllib

    cfg = build_config(TokenizerRunConfig, {"model": {"size": "large", "width": 48}})
    assert build_config(TokenizerRunConfig, tomllib.loads(dumps_toml(cfg))) == cfg
