"""A run people can watch: --report-to sends metrics and snapshot grids to an Accelerate tracker (a fake
one here, through Accelerate's GeneralTracker), metrics.jsonl stays; --prompts choose the grids' prompts."""

import json

import pytest
from accelerate.tracking import GeneralTracker

from libcem.cli import main
from libcem.errors import LibcemError
from libcem.generative.runs import StageRun
from libcem.generative.training import trackers
from test_prior_cli import TINY_BOTH


class Recorder(GeneralTracker):
    name = "recorder"
    requires_logging_directory = False

    def __init__(self):
        super().__init__()
        self.config, self.rows, self.images, self.ended = None, [], [], False

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values):
        self.config = values

    def log(self, values, step=None, **kwargs):
        self.rows.append((step, values))

    def log_images(self, values, step=None, **kwargs):
        self.images.append((step, {k: [im.shape for im in v] for k, v in values.items()}))

    def finish(self):
        self.ended = True


def test_report_to_logs_metrics_and_grids_through_accelerate(tmp_path, monkeypatch):
    made = []
    monkeypatch.setattr(trackers, "make_trackers", lambda name: made.append(Recorder()) or made[-1:] if name else [])
    run = tmp_path / "run"
    prompts = ["a blue fern fractal on a black background", "a blue spiral fractal on a gray background"]
    assert main(["train", "--out", str(run), *TINY_BOTH, "--report-to", "tensorboard", "--prompts", *prompts]) == 0
    tokenizer, prior = made
    assert tokenizer.config["train.report_to"] == "tensorboard" and tokenizer.config["model.codebook_size"] == 16
    assert prior.config["snapshot.prompts"] == str(prompts)
    rows = [json.loads(line) for line in (run / "prior" / "metrics.jsonl").read_text().splitlines()]
    assert [step for step, _ in prior.rows] == [r["step"] for r in rows] == [2, 4]  # metrics.jsonl stays
    assert prior.rows[-1][1]["loss"] == rows[-1]["loss"]
    size = 2 * (6 * 18 + 2)  # 2 rows x 6 images of 16 px with 2 px padding, upscaled 2x
    assert prior.images == [(4, {"samples": [(2 * (2 * 18 + 2), size, 3)]})]
    assert tokenizer.ended and prior.ended
    record = json.loads((StageRun(run / "prior").latest_checkpoint() / "config.json").read_text())
    assert record["prompts"] == prompts  # also what the kits' sample cell uses


def test_report_to_without_its_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(trackers.util, "find_spec", lambda name: None)
    with pytest.raises(LibcemError, match="--report-to wandb needs the wandb package: pip install wandb"):
        trackers.make_trackers("wandb")
    assert trackers.make_trackers("") == []


def test_prompts_the_text_encoder_cannot_take_fail_before_training(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), *TINY_BOTH, "--prompts", "a cat"]) == 2
    err = capsys.readouterr().err
    assert "a cat" in err and err.count("\n") == 1
    assert main(["train", "tokenizer", "--out", str(tmp_path / "t"), "--prompts", "a cat"]) == 2
    assert "--prompts sets the prior's snapshot prompts" in capsys.readouterr().err
