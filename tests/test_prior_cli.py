"""A few-step end-to-end run of the CLI: train both stages on tiny settings, sample, eval; and Pipeline."""

import json

import torch
from PIL import Image

from libcem.cli import main
from libcem.files import load_tensors
from libcem.generative.runs import StageRun

TINY_BOTH = [
    "--data", "fractals", "--steps", "4", "--text-encoder", "label", "--quiet",
    "--set", "data.image_size=16", "--set", "data.train_size=48", "--set", "data.test_size=16",
    "--set", "train.batch_size=8", "--set", "train.log_every=2", "--set", "train.sample_every=4",
    "--set", "train.checkpoint_every=2", "--set", "optim.warmup_steps=2",
    "--set", "tokenizer.model.width=8", "--set", "tokenizer.model.channel_mult=[1, 1]",
    "--set", "tokenizer.model.latent_dim=4", "--set", "tokenizer.model.codebook_size=16",
    "--set", "tokenizer.model.codebook_groups=2",
    "--set", "prior.model.width=32", "--set", "prior.model.depth=1", "--set", "prior.model.heads=2",
]


def test_train_both_stages_sample_and_eval(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIBCEM_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "fr"
    assert main(["train", "--out", str(run), *TINY_BOTH]) == 0
    out = capsys.readouterr().out
    assert "held-out PSNR" in out and "prior trained on 48 images with the 'label' text encoder" in out
    for name in ("tokenizer/config.toml", "prior/config.toml", "prior/metrics.jsonl", "prior/loss.png",
                 "prior/samples/step_00000004.png", "prior/tokenizer/model.safetensors"):
        assert (run / name).is_file(), name
    last = StageRun(run / "prior").checkpoints()[-1]
    assert last.name == "step_00000004"
    # sampling uses the EMA weights: the checkpoint's model folder holds the EMA shadow
    raw, model = load_tensors(last / "training" / "raw.safetensors"), load_tensors(last / "model.safetensors")
    assert not (last / "training" / "ema.safetensors").exists()  # stored once, as the model folder's weights
    assert raw.keys() == model.keys() and not all(torch.equal(raw[k], model[k]) for k in model)
    record = json.loads((last / "config.json").read_text())
    assert record["kind"] == "prior" and record["text_encoder"] == "label" and min(record["metadata"]["latent_scale"]) > 0
    prompt = record["prompts"][0]

    grid = tmp_path / "grid.png"
    assert main(["sample", "--model", str(run), prompt, "-n", "4", "--steps", "3", "--guidance", "2",
                 "--seed", "0", "--output", str(grid), "--upscale", "1"]) == 0
    assert Image.open(grid).size == (2 * 18 + 2, 2 * 18 + 2)  # 2x2 grid of 16 px images, 2 px padding
    assert main(["sample", "--model", str(run / "prior"), prompt, "-n", "3", "--steps", "3", "--batch-size", "2",
                 "--output-dir", str(tmp_path / "each")]) == 0
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == ["00_0000.png", "00_0001.png", "00_0002.png"]
    capsys.readouterr()

    assert main(["eval", "--model", str(run), "--limit", "6", "--steps", "2", "--classifier-steps", "3",
                 "--json", str(tmp_path / "eval.json"), "--quiet"]) == 0
    report = capsys.readouterr().out
    assert "family" in report and "color" in report and "Inception FID" in report
    numbers = json.loads((tmp_path / "eval.json").read_text())
    assert set(numbers["labels"]) == {"family", "color"}
    for row in numbers["labels"].values():
        assert 0 <= row["adherence"] <= 1 and row["real_feature_fid"] >= 0

    # the prior alone, on the trained tokenizer
    assert main(["train", "prior", "--tokenizer", str(run / "tokenizer"), "--out", str(tmp_path / "pr"),
                 "--steps", "2", "--text-encoder", "label", "--quiet", "--set", "train.batch_size=8",
                 "--set", "data.train_size=48", "--set", "data.test_size=16",
                 "--set", "model.width=32", "--set", "model.depth=1", "--set", "model.heads=2"]) == 0
    assert "prior trained on 48 images" in capsys.readouterr().out
    import libcem

    pipe = libcem.Pipeline.from_pretrained(tmp_path / "pr")
    images = pipe(prompt, n=2, steps=2)
    assert images.shape == (2, 3, 16, 16) and 0 <= images.min() and images.max() <= 1


def test_sample_errors_are_one_line(tmp_path, capsys):
    assert main(["sample", "--model", str(tmp_path / "nope"), "a cat"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "prior", "--out", str(tmp_path / "p"), "--quiet"]) == 2
    assert "--tokenizer" in capsys.readouterr().err
