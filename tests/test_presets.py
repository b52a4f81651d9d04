"""The preset registry, `libcem presets`, `libcem train --preset` and `--time-limit`."""

import json

import pytest

from libcem.cli import main
from libcem.errors import LibcemError
from libcem.generative.presets import PRESETS, choose_preset, describe, get_preset
from libcem.generative.runs import StageRun


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_both_stage_configs(name):
    preset = PRESETS[name]
    tok = preset.stage_config("tokenizer")
    prior = preset.stage_config("prior")
    assert tok.data == prior.data and tok.train.steps >= 1 and prior.train.steps >= 1


def test_stage_tables_override_shared_ones_without_touching_the_registry():
    preset = PRESETS["gpu-fractals"]
    before = json.dumps(preset.config, sort_keys=True)
    tok = preset.stage_config("tokenizer")
    prior = preset.stage_config("prior")
    assert (tok.train.batch_size, prior.train.batch_size) == (128, 256)
    assert tok.train.precision == prior.train.precision == "fp16"  # the shared table
    assert json.dumps(preset.config, sort_keys=True) == before


def test_auto_choice_follows_gpu_memory():
    assert choose_preset(None) == "cpu-fractals"
    assert choose_preset(7.5) == "cpu-fractals"
    assert choose_preset(14.7) == "gpu-fractals"  # a T4 reports 14.7 GiB
    assert choose_preset(80) == "gpu-fractals"


def test_figures_show_only_where_measured():
    h200 = {"device": "NVIDIA H200", "images_per_s": 51234.0, "peak_gib": 1.5, "s_per_1000_steps": 5.0,
            "batch_size": 256, "precision": "fp16"}
    table = {"gpu-fractals": {"prior": {"NVIDIA H200": h200}}}
    rows = describe("gpu-fractals", table)
    assert rows["tokenizer"] == "not measured"
    assert rows["prior"] == ("1.50 GiB peak GPU memory, 5 s per 1,000 steps, 51234 images/s (batch 256, fp16) "
                             "on NVIDIA H200")
    assert describe("tiny", table)["prior"] == "not measured"


def test_presets_command_lists_every_preset(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in PRESETS:
        assert f"\n{name}: " in "\n" + out
    assert main(["presets", "gpu-cifar10"]) == 0
    out = capsys.readouterr().out
    assert 'source = "cifar10"' in out and "[prior.model]" in out
    for argv in (["presets", "nope"], ["train", "--preset", "nope", "--out", "x"]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
    with pytest.raises(LibcemError, match="unknown preset 'nope'"):
        get_preset("nope")


def test_train_with_a_preset_and_its_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIBCEM_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--out", str(run), "--quiet", "--set", "prior.train.steps=2"]) == 0
    assert [c.name for c in StageRun(run / "prior").checkpoints()] == ["step_00000002"]
    assert 'encoder = "label"' in (run / "prior" / "config.toml").read_text()
    assert main(["train", "tokenizer", "--preset", "tiny", "--out", str(tmp_path / "tok"), "--quiet"]) == 0
    assert "width = 8" in (tmp_path / "tok" / "config.toml").read_text()
    capsys.readouterr()
    assert main(["train", "--preset", "tiny", "--config", str(tmp_path / "x.toml"), "--out", str(tmp_path / "b")]) == 2
    assert "--preset or --config" in capsys.readouterr().err


def test_time_limit_stops_with_a_checkpoint_and_the_rerun_continues(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIBCEM_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    args = ["train", "--preset", "tiny", "--out", str(run), "--quiet", "--resume"]
    assert main([*args, "--time-limit", "1e-9"]) == 0  # over at once: stops at the first logging step
    out = capsys.readouterr().out
    assert "tokenizer: stopped at the time limit after step 2 of 4" in out and not (run / "prior").exists()
    assert [c.name for c in StageRun(run / "tokenizer").checkpoints()] == ["step_00000002"]
    assert main(args) == 0
    assert "both stages trained" in capsys.readouterr().out
    assert [json.loads(line)["step"] for line in (run / "tokenizer" / "metrics.jsonl").read_text().splitlines()] == [2, 4]
    assert main([*args, "--time-limit", "0"]) == 2
    assert "--time-limit must be a positive" in capsys.readouterr().err


def test_expected_time_comes_from_measurements_only():
    from libcem.generative.presets import expected_time, measured

    assert expected_time("cpu-fractals", "cpu").startswith("expected: about 36 min (tokenizer 10, prior 26.3")
    assert expected_time("gpu-cifar10", "cpu") == ""  # never measured on a CPU
    assert expected_time("cpu-fractals", "a GPU nobody measured") == ""
    rows = measured()["cpu-fractals"]
    device = next(iter(rows["tokenizer"]))
    if device in rows["prior"]:
        line = expected_time("cpu-fractals", device)
        tok = 3000 * rows["tokenizer"][device]["s_per_1000_steps"] / 60_000
        assert f"tokenizer {tok:.0f}," in line
