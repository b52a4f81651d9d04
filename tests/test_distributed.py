"""Data-parallel training through Accelerate: 2 CPU processes (gloo) launched by `accelerate launch`.

The EM codebook sees the global batch (k-means init and restarts on the gathered latents, EM
statistics all-reduced) and DDP averages the gradients, so 2 processes x 4 images follow the same
path as 1 process x 8 images up to the order of float additions.
"""

import json
import os
import socket
import subprocess
import sys

import pytest
from conftest import TINY_CLI

from libcem.cli import main
from libcem.generative.runs import StageRun

STEPS = ["--set", "train.keep_checkpoints=10"]


def launch(n: int, args: list[str], cache) -> subprocess.CompletedProcess:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_ip", "127.0.0.1", "--main_process_port", str(port), "-m", "libcem", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", LIBCEM_CACHE=str(cache), CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def losses(run) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len({r["step"] for r in rows}) == len(rows), "a step was logged twice"
    return {r["step"]: r["loss"] for r in rows}


def test_two_processes_match_one_and_resume_across_process_counts(tmp_path):
    cache = tmp_path / "cache"
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", "tokenizer", "--out", str(one), "--steps", "4", *TINY_CLI, *STEPS]) == 0
    done = launch(2, ["train", "tokenizer", "--out", str(two), "--steps", "4", *TINY_CLI, *STEPS], cache)
    assert done.stdout.count("held-out PSNR") == 1  # only the main process reports
    assert sorted(d.name for d in two.iterdir() if d.is_dir()) == ["checkpoints", "samples"]
    assert [c.name for c in StageRun(two).checkpoints()] == ["step_00000002", "step_00000004"]
    single, double = losses(one), losses(two)
    for step in (2, 4):
        assert double[step] == pytest.approx(single[step], rel=1e-4), (step, single, double)

    # the 2-process run resumed on 1 process, and the 1-process run resumed on 2, continue alike
    assert main(["train", "tokenizer", "--out", str(two), "--steps", "6", "--resume", *TINY_CLI, *STEPS]) == 0
    launch(2, ["train", "tokenizer", "--out", str(one), "--steps", "6", "--resume", *TINY_CLI, *STEPS], cache)
    for run in (one, two):
        assert [c.name for c in StageRun(run).checkpoints()][-1] == "step_00000006"
        assert sorted(losses(run)) == [2, 4, 6]
    assert losses(two)[6] == pytest.approx(losses(one)[6], rel=1e-4)
