"""The run folder: the one module that knows where everything of a training run lives.

A stage run (what `libcem train tokenizer|prior` writes):

    RUN/config.toml                      the resolved config (what --resume reads)
    RUN/metrics.jsonl, RUN/loss.png      one JSON row per logged step; its plot
    RUN/samples/step_XXXXXXXX.png        snapshot grids
    RUN/logs/                            TensorBoard event files (--report-to tensorboard)
    RUN/checkpoints/step_XXXXXXXX/       complete checkpoints (a model folder + training/, state.json last)
    RUN/checkpoints/.tmp-step_XXXXXXXX/  a checkpoint being written (never read)
    RUN/checkpoints/.trash-step_XXXXXXXX/ an old checkpoint being deleted (never read)
    RUN/tokenizer/                       prior runs only: a copy of the frozen tokenizer's model folder
    RUN/.lock                            held (flock) by the process training in RUN; marks RUN as a libcem run
    RUN/train.log, RUN/train.pid         the platform kits' log and process id (written before training starts)

A two-stage run (`libcem train`) is RUN/tokenizer and RUN/prior, each a stage run. An export
(`libcem export`, `Pipeline.save_pretrained`) is a model to share, see `ExportFolder`. A model folder
(`model.safetensors` + `config.json`) is what `from_pretrained` loads; `resolve_model_dir` and
`resolve_prior` turn whatever a user passes as `--model` into model folders.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from libcem.errors import LibcemError
from libcem.files import CONFIG, PICKLE_SUFFIXES, TRASH_PREFIX, WEIGHTS, read_record

STAGES = ("tokenizer", "prior")  # the stages of a two-stage run, in training order
CHECKPOINT_PREFIX, TMP_PREFIX = "step_", ".tmp-"
LOCK = ".lock"
KIT_FILES = ("train.log", "train.pid")  # libcem.platforms writes these into RUN before `libcem train` starts
STATE = "training/state.json"  # written last into a checkpoint: its presence marks a complete one
COMPLETE_MARKERS = (CONFIG, WEIGHTS, STATE)  # training/raw.safetensors exists only with EMA


def step_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:08d}"


def step_of(path: Path) -> int:
    """The step in a checkpoint's or snapshot's name: .../step_00001200(.png) -> 1200."""
    return int(Path(path).stem[len(CHECKPOINT_PREFIX):])


@dataclass(frozen=True)
class StageRun:
    """The folder of one training stage."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        return self.path / "config.toml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def loss_plot(self) -> Path:
        return self.path / "loss.png"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    @property
    def checkpoint_root(self) -> Path:
        return self.path / "checkpoints"

    @property
    def tracker_dir(self) -> Path:
        """TensorBoard's event files (--report-to tensorboard)."""
        return self.path / "logs"

    @property
    def tokenizer_copy(self) -> Path:
        """Prior runs: where the frozen tokenizer's model files are copied, so the run stands alone."""
        return self.path / "tokenizer"

    def exists(self) -> bool:
        """A stage has started once its config is written."""
        return self.config.is_file()

    def snapshot(self, step: int) -> Path:
        return self.samples / f"{step_name(step)}.png"

    def snapshots(self) -> list[Path]:
        return sorted(self.samples.glob(f"{CHECKPOINT_PREFIX}*.png"))

    def latest_snapshot(self) -> Path | None:
        grids = self.snapshots()
        return grids[-1] if grids else None

    def checkpoint(self, step: int) -> Path:
        return self.checkpoint_root / step_name(step)

    def partial_checkpoint(self, step: int) -> Path:
        return self.checkpoint_root / f"{TMP_PREFIX}{step_name(step)}"

    def partial_checkpoints(self) -> list[Path]:
        """Temporary folders left by a process killed while writing or deleting a checkpoint."""
        root = self.checkpoint_root
        if not root.is_dir():
            return []
        return sorted(p for p in root.iterdir() if p.name.startswith((TMP_PREFIX, TRASH_PREFIX)))

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first (temporary, half-written or half-deleted folders are ignored)."""
        root = self.checkpoint_root
        if not root.is_dir():
            return []
        return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)
                      and all((p / name).is_file() for name in COMPLETE_MARKERS))

    def latest_checkpoint(self) -> Path | None:
        ckpts = self.checkpoints()
        return ckpts[-1] if ckpts else None


def is_run(path: Path) -> bool:
    """A folder libcem trains in: it holds the run lock, or a config.toml and a metrics.jsonl, or stages that do."""
    stage = StageRun(path)
    return ((path / LOCK).is_file() or (stage.config.is_file() and stage.metrics.is_file())
            or any(is_run(path / s) for s in STAGES if (path / s).is_dir()))


def check_out_folder(path: Path) -> None:
    """Refuse to train into a file, or into a folder that holds things and is not a libcem run."""
    if path.exists() and not path.is_dir():
        raise LibcemError(f"--out {path} is a file; give a folder for the run")
    if path.is_dir() and any(p.name not in KIT_FILES for p in path.iterdir()) and not is_run(path):
        raise LibcemError(f"--out {path} holds files and is not a libcem run folder; "
                          "choose a new or empty folder so that nothing in it is overwritten")


@contextlib.contextmanager
def locked_run(path: str | Path) -> Iterator[Path]:
    """Create (or reuse) the run folder `path` and hold its lock while the block runs.

    The lock is an `flock` on RUN/.lock, which the kernel releases when the process ends in any way,
    so a killed run never leaves it stuck. In a data-parallel launch only process 0 (RANK 0) locks."""
    import fcntl

    path = Path(path)
    check_out_folder(path)
    if int(os.environ.get("RANK", "0")) != 0:
        yield path
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise LibcemError(f"cannot create the run folder {path}: {err.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LibcemError(f"{path} is in use by another libcem process training in it; wait for it to "
                              "finish or choose another --out") from None
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@dataclass(frozen=True)
class TwoStageRun:
    """RUN/tokenizer then RUN/prior, as `libcem train` writes them."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def stage(self, name: str) -> StageRun:
        if name not in STAGES:
            raise LibcemError(f"unknown stage '{name}'; the stages are {', '.join(STAGES)}")
        return StageRun(self.path / name)

    @property
    def tokenizer(self) -> StageRun:
        return self.stage("tokenizer")

    @property
    def prior(self) -> StageRun:
        return self.stage("prior")

    def started_stages(self) -> list[StageRun]:
        return [self.stage(s) for s in STAGES if self.stage(s).exists()]


@dataclass(frozen=True)
class ExportFolder:
    """A self-contained model to share (`libcem export RUN OUT`, `Pipeline.save_pretrained(OUT)`, a Hub repo):

        OUT/model_index.json   what it is: {"library": "libcem", "libcem_version", "prior", "tokenizer"}
        OUT/README.md          the model card (data, training, metrics, samples)
        OUT/samples.png        a sample grid
        OUT/prior/             model folder: the prior's inference (EMA) weights and record
        OUT/tokenizer/         model folder: the frozen tokenizer
    """

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def index(self) -> Path:
        return self.path / "model_index.json"

    @property
    def card(self) -> Path:
        return self.path / "README.md"

    @property
    def samples(self) -> Path:
        return self.path / "samples.png"

    @property
    def prior(self) -> Path:
        return self.path / "prior"

    @property
    def tokenizer(self) -> Path:
        return self.path / "tokenizer"

    def exists(self) -> bool:
        return self.index.is_file()


def stage_runs_of(model_dir: Path) -> tuple[StageRun | None, StageRun | None]:
    """The prior's stage run and its tokenizer's stage run (a two-stage run's RUN/tokenizer), when
    `model_dir` is a checkpoint of a run (RUN/prior/checkpoints/step_X); None where there is none."""
    run = StageRun(model_dir.parent.parent)
    if model_dir.parent.name != "checkpoints" or not run.exists():
        return None, None
    tokenizer = StageRun(run.path.parent / "tokenizer")
    return run, tokenizer if tokenizer.exists() else None


def is_model_dir(path: Path) -> bool:
    return (path / CONFIG).is_file()


def resolve_model_dir(path: str | Path) -> Path:
    """A model folder, or a stage run's latest checkpoint; refuses pickled weights."""
    path = Path(path).expanduser()
    if not path.exists():
        raise LibcemError(f"model path {path} does not exist")
    if is_model_dir(path):
        if not (path / WEIGHTS).is_file():
            pickles = [p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES]
            hint = f" (found {', '.join(pickles)}: pickled weights are never loaded)" if pickles else ""
            raise LibcemError(f"{path} has no {WEIGHTS}{hint}")
        return path
    latest = StageRun(path).latest_checkpoint()
    if latest is not None:
        return latest
    raise LibcemError(f"{path} is neither a model folder ({CONFIG} + {WEIGHTS}) nor a run folder with checkpoints")


@dataclass(frozen=True)
class PriorFolders:
    """What a prior needs to sample: its model folder (and its record, read once) and its tokenizer."""

    model_dir: Path
    record: dict
    tokenizer_dir: Path


def resolve_tokenizer_dir(path: str | Path) -> Path:
    """A tokenizer's model folder from where a user may point: an export or a two-stage run (their
    tokenizer), a tokenizer stage run (its latest checkpoint) or a model folder."""
    path = Path(path).expanduser()
    if ExportFolder(path).exists():
        return resolve_model_dir(ExportFolder(path).tokenizer)
    if TwoStageRun(path).tokenizer.path.is_dir() and not is_model_dir(path):
        return resolve_model_dir(TwoStageRun(path).tokenizer.path)
    return resolve_model_dir(path)


def resolve_prior(path: str | Path, prior_kind: str = "prior") -> PriorFolders:
    """An export, a two-stage run, a prior stage run or a prior checkpoint -> the prior's model folder and tokenizer.

    The tokenizer is the prior run's copy (RUN/prior/tokenizer), found from the run folder or from
    one of its checkpoints (RUN/prior/checkpoints/step_X).
    """
    path = Path(path).expanduser()
    export = ExportFolder(path)
    if export.exists():
        return PriorFolders(resolve_model_dir(export.prior), read_record(export.prior), export.tokenizer)
    if TwoStageRun(path).prior.path.is_dir():
        path = TwoStageRun(path).prior.path
    model_dir = resolve_model_dir(path)
    record = read_record(model_dir)
    kind = record.get("kind")
    if kind != prior_kind:
        hint = " (train a prior on it with: libcem train prior --tokenizer PATH --out RUN)" if kind == "tokenizer" else ""
        raise LibcemError(f"{model_dir} holds a '{kind}', not a prior{hint}")
    run_of_checkpoint = model_dir.parent.parent  # RUN/checkpoints/step_X -> RUN
    for run in (path, run_of_checkpoint):
        if StageRun(run).tokenizer_copy.is_dir():
            return PriorFolders(model_dir, record, StageRun(run).tokenizer_copy)
    raise LibcemError(f"no tokenizer/ folder next to the prior in {path}; was it trained with libcem train prior?")
