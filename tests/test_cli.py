import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import TINY_CLI
from PIL import Image

from libcem.cli import main
from libcem.files import load_tensors
from libcem.generative.models.tokenizer import Tokenizer
from libcem.generative.runs import StageRun


def test_train_then_reconstruct_end_to_end(tmp_path, capsys):
    run = tmp_path / "tok"
    assert main(["train", "tokenizer", "--out", str(run), "--steps", "4", *TINY_CLI]) == 0
    out = capsys.readouterr().out
    assert "held-out PSNR" in out
    model = Tokenizer.from_pretrained(run)
    assert model.in_channels == 3 and model.image_size == 16
    assert main(["reconstruct", "--model", str(run), "fractals", "--output", str(tmp_path / "rec")]) == 0
    assert "8 images: mean PSNR" in capsys.readouterr().out  # the run's own held-out split (data.test_size=8)
    pair = Image.open(tmp_path / "rec" / "fractals_0000.png")
    assert pair.size == (32, 16)  # input | reconstruction
    assert (tmp_path / "rec" / "grid.png").is_file()
    # an image file of another size goes through the same fully convolutional model
    Image.new("RGB", (20, 12), (200, 30, 30)).save(tmp_path / "red.png")
    assert main(["reconstruct", "--model", str(run), str(tmp_path / "red.png"), "--output", str(tmp_path / "rec2")]) == 0
    assert Image.open(tmp_path / "rec2" / "red.png").size == (40, 12)


def test_reconstruct_reports_rfid_and_measures_the_inputs_once(tmp_path, capsys, monkeypatch):
    import json

    import libcem.generative.evaluation.inception as inc

    run = tmp_path / "tok"
    assert main(["train", "tokenizer", "--out", str(run), "--steps", "2", *TINY_CLI]) == 0
    net = tmp_path / "net.pt"
    net.write_bytes(b"stand-in network")
    monkeypatch.setenv(inc.NETWORK_ENV, str(net))
    seen = []
    monkeypatch.setattr(inc, "inception_features", lambda x, device=None, resize="bilinear": seen.append(len(x)) or x.flatten(1)[:, :6].double())
    for attempt in range(2):
        assert main(["reconstruct", "--model", str(run), "fractals", "--output", str(tmp_path / "r"), "--limit", "7",
                     "--fid", "--json", str(tmp_path / "r.json")]) == 0
    out = json.loads((tmp_path / "r.json").read_text())
    assert out["images"] == 7 and out["rfid"] > 0 and f"{out['rfid']:.2f}" in capsys.readouterr().out
    assert seen == [7, 7, 7]  # inputs, reconstructions; then the reconstructions only: the inputs were cached
    assert len(list((tmp_path / "r").glob("fractals_*.png"))) == 7
    assert main(["reconstruct", "--model", str(run), "fractals", "--output", str(tmp_path / "r"), "--limit", "0"]) == 2


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "x"), "--set", "optim.lrr=1", *TINY_CLI]) == 2
    err = capsys.readouterr().err
    assert err.startswith("libcem: error:") and "optim.lrr" in err and "Traceback" not in err
    assert main(["reconstruct", "--model", str(tmp_path / "none"), "digits", "--output", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def _train_cmd(run, steps):
    return [sys.executable, "-m", "libcem", "train", "tokenizer", "--out", str(run), "--steps", str(steps), "--resume", *TINY_CLI,
            "--set", "train.checkpoint_every=1", "--set", "train.keep_checkpoints=3"]


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    steps = 24
    subprocess.run(_train_cmd(tmp_path / "whole", steps), check=True, env=env, capture_output=True)
    proc = subprocess.Popen(_train_cmd(tmp_path / "killed", steps), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(StageRun(tmp_path / "killed").checkpoints()) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = StageRun(tmp_path / "killed").checkpoints()[-1].name
    assert killed_at != f"step_{steps:08d}"
    subprocess.run(_train_cmd(tmp_path / "killed", steps), check=True, env=env, capture_output=True)
    a = load_tensors(StageRun(tmp_path / "whole").checkpoints()[-1] / "training" / "raw.safetensors")
    b = load_tensors(StageRun(tmp_path / "killed").checkpoints()[-1] / "training" / "raw.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_options_are_named_by_their_command_and_o_is_the_output_everywhere(capsys):
    """An unknown option is reported with the command's own usage (argparse reports it at the
    top level, `usage: libcem [-h] COMMAND ...`), and `-o` names the output of every command
    that writes one, as in `libcem denoise`."""
    from pathlib import Path

    from libcem.cli import build_parser

    with pytest.raises(SystemExit) as stop:
        main(["sample", "--model", "m", "a cat", "--prompt", "x"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "usage: libcem sample" in err
    assert "libcem sample: error: unrecognized arguments: --prompt x (see libcem sample --help)" in err
    with pytest.raises(SystemExit):
        main(["--bogus"])
    assert "libcem: error: unrecognized arguments: --bogus (see libcem --help)" in capsys.readouterr().err
    parser = build_parser()
    assert parser.parse_args(["sample", "--model", "m", "a cat", "-o", "g.png"]).output == Path("g.png")
    assert parser.parse_args(["train", "-o", "run"]).out == Path("run")
    assert parser.parse_args(["reconstruct", "--model", "m", "-o", "d", "x.png"]).output == Path("d")
