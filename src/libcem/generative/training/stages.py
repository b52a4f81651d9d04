"""Stage assembly: config -> data -> models -> Task -> Trainer, for each stage of a run.

The one place that builds and trains a stage; `libcem train`, the benchmarks and the platform
kits call it, and the command line only parses its arguments into these calls.

- config: the stage's defaults <- the run's saved config.toml (on resume) or a base dict (a
  preset's stage table, a --config file) <- dotted overrides;
- tokenizer stage: data -> TokenizerTask;
- prior stage: the frozen tokenizer copied into the run -> its data source by default -> data ->
  text encoder -> PriorTask;
- two-stage run: the tokenizer into RUN/tokenizer, then the prior on it into RUN/prior (both
  stages' configs are checked before the first one trains).

Each stage trains inside `locked_run`: a folder that is not a libcem run is refused, and a second
process training in the same folder is refused while the first holds its lock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from libcem.config import build_config, read_toml, replace, stage_base, to_dict, with_saved_defaults
from libcem.errors import LibcemError
from libcem.generative.runs import STAGES, StageRun, TwoStageRun, locked_run
from libcem.generative.training.prior import PriorRunConfig, PriorTask
from libcem.generative.training.tokenizer import TokenizerRunConfig, TokenizerTask

STAGE_CONFIGS = {"tokenizer": TokenizerRunConfig, "prior": PriorRunConfig}
FIXED_ON_RESUME = ("model", "data", "text")  # sections a resumed run must keep: they shape the weights


@dataclass
class StageOutcome:
    stage: str
    finished: bool  # False: stopped at the deadline with a checkpoint; resume continues
    step: int
    steps: int  # the stage's train.steps
    checkpoint: Path
    main_process: bool  # only the main process of a data-parallel run reports
    summary: str = ""  # one line for the user (main process, finished stages)

    def report(self) -> str:
        if self.finished:
            return self.summary
        return (f"{self.stage}: stopped at the time limit after step {self.step} of {self.steps}, with a "
                "checkpoint; run the same command with --resume to continue")


def stage_config(stage: str, run: StageRun, base: dict | None = None, overrides: list[str] = (),
                 resume: bool = False):
    """The stage's config: defaults <- the run's saved config.toml (on resume) or `base` <- overrides.

    On resume an override may not change the model, its data or its text encoder."""
    cls = STAGE_CONFIGS[stage]
    if not (resume and run.exists()):
        return build_config(cls, base or {}, list(overrides))
    saved = with_saved_defaults(cls, read_toml(run.config))
    cfg, before = build_config(cls, saved, list(overrides)), to_dict(build_config(cls, saved))
    for section in FIXED_ON_RESUME:
        old, new = before.get(section, {}), to_dict(cfg).get(section, {})
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                raise LibcemError(f"--resume cannot change {section}.{key} ({old.get(key)!r} in {run.config}, "
                                  f"now {new.get(key)!r}): the checkpoints were trained with it; start a new --out")
    return cfg


def split_overrides(overrides: list[str], stage: str) -> list[str]:
    """The overrides for `stage` of a two-stage run: unprefixed ones plus those prefixed 'stage.'."""
    out = []
    for text in overrides:
        head = text.split(".", 1)[0].strip()
        if head == stage:
            out.append(text.split(".", 1)[1])
        elif head not in STAGES:
            out.append(text)
    return out


def prepare_data(cfg, progress: bool = True):
    """load_data, saying what it does and how long it took (rendering fractals takes a while on a CPU)."""
    import time

    from libcem.generative.data import load_data

    if progress:
        what = {"fractals": f"rendering {cfg.train_size:,} + {cfg.test_size:,} fractals"}.get(cfg.source, "loading")
        print(f"data: {what} from '{cfg.source}' ...", flush=True)
    t0 = time.perf_counter()
    splits = load_data(cfg, progress)
    if progress:
        print(f"data: {len(splits.train):,} + {len(splits.test):,} images ready in {time.perf_counter() - t0:.0f} s",
              flush=True)
    return splits


def _fit(run: StageRun, cfg, task, resume: bool, deadline: float | None, progress: bool):
    from libcem.generative.training.trainer import Trainer

    trainer = Trainer(run.path, cfg, task, progress=progress)
    return trainer, trainer.fit(resume=resume, deadline=deadline)


def train_tokenizer(run: str | Path, base: dict | None = None, overrides: list[str] = (), resume: bool = False,
                    deadline: float | None = None, progress: bool = True) -> StageOutcome:
    """Train (or resume) the tokenizer in `run`."""
    from libcem.generative.training.tokenizer import evaluate

    run = StageRun(Path(run))
    cfg = stage_config("tokenizer", run, base, overrides, resume)
    with locked_run(run.path):
        splits = prepare_data(cfg.data, progress)
        trainer, result = _fit(run, cfg, TokenizerTask(cfg, splits), resume, deadline, progress)
    outcome = StageOutcome("tokenizer", result.finished, result.step, cfg.train.steps, result.checkpoint,
                           trainer.acc.is_main_process)
    if outcome.finished and outcome.main_process:
        scores = evaluate(trainer.inference_model(), splits.test)
        outcome.summary = (f"step {result.step}: held-out PSNR {scores['psnr']:.2f} dB on {scores['images']} images, "
                           f"{scores['codes_used']:.0%} of codes used; model: {result.checkpoint}")
    return outcome


def sets_key(overrides: list[str], key: str) -> bool:
    return any(text.split("=", 1)[0].strip() == key for text in overrides)


def prior_config(run: StageRun, tokenizer, tokenizer_source: str | Path | None, base: dict | None,
                 overrides: list[str], resume: bool) -> PriorRunConfig:
    """The prior's config; by default its data source, image size and channels are the tokenizer's."""
    from libcem.files import read_record
    from libcem.generative.text import default_encoder

    overrides = list(overrides)
    if not sets_key(overrides, "data.source") and not (resume and run.exists()):
        source = read_record(run.tokenizer_copy).get("data")  # the data the tokenizer was trained on
        if source is not None and not isinstance(source, str):
            raise LibcemError(f"{run.tokenizer_copy}: 'data' must be the name of a data source")
        overrides = ([f"data.source={json.dumps(source)}"] if source else []) + overrides
    cfg = stage_config("prior", run, base, overrides, resume)
    cfg = replace(cfg, latent={"tokenizer": str(tokenizer_source or cfg.latent.tokenizer)},
                  data={"image_size": cfg.data.image_size or tokenizer.image_size,
                        "channels": cfg.data.channels or tokenizer.in_channels},
                  text={"encoder": cfg.text.encoder or default_encoder()})
    if (cfg.data.image_size, cfg.data.channels) != (tokenizer.image_size, tokenizer.in_channels):
        raise LibcemError(
            f"data.image_size={cfg.data.image_size}, data.channels={cfg.data.channels} differ from the tokenizer's "
            f"{tokenizer.image_size} and {tokenizer.in_channels}: leave them at 0 for the prior"
        )
    return cfg


def prior_task(cfg: PriorRunConfig, tokenizer, splits, progress: bool = True) -> PriorTask:
    """The prior's Task on `splits`, with the text encoder fitted to their captions."""
    from libcem.generative.text import build_encoder

    encoder = build_encoder(cfg.text.encoder, sorted(set(splits.train.captions)))
    return PriorTask(cfg, splits, tokenizer, encoder, progress=progress)


def train_prior(run: str | Path, tokenizer_source: str | Path | None = None, base: dict | None = None,
                overrides: list[str] = (), resume: bool = False, deadline: float | None = None,
                progress: bool = True) -> StageOutcome:
    """Train (or resume) the prior in `run` on a trained tokenizer (copied into the run first)."""
    from libcem.device import default_device
    from libcem.generative.models.tokenizer import Tokenizer
    from libcem.generative.training.prior import attach_tokenizer

    run = StageRun(Path(run))
    with locked_run(run.path):
        tok_dir = attach_tokenizer(run.path, tokenizer_source, resume)
        tok = Tokenizer.from_pretrained(tok_dir, default_device())  # encodes the training images once
        cfg = prior_config(run, tok, tokenizer_source, base, overrides, resume)
        splits = prepare_data(cfg.data, progress)
        task = prior_task(cfg, tok, splits, progress)
        trainer, result = _fit(run, cfg, task, resume, deadline, progress)
    outcome = StageOutcome("prior", result.finished, result.step, cfg.train.steps, result.checkpoint,
                           trainer.acc.is_main_process)
    outcome.summary = (f"step {result.step}: prior trained on {len(splits.train)} images with the "
                       f"'{task.encoder.name}' text encoder; model: {result.checkpoint}")
    return outcome


def train_two_stage(out: str | Path, two_stage: dict | None = None, overrides: list[str] = (), resume: bool = False,
                    deadline: float | None = None, progress: bool = True, report=print) -> StageOutcome:
    """The tokenizer into OUT/tokenizer, then the prior on it into OUT/prior.

    `two_stage` has shared tables plus `tokenizer` / `prior` ones (a preset's config, a `libcem
    train --config` file); an override applies to both stages unless prefixed with a stage name.
    `report` gets each finished stage's summary line (main process only)."""
    import os

    run = TwoStageRun(Path(out))
    bases = {s: None if two_stage is None else stage_base(two_stage, s) for s in STAGES}
    for stage in STAGES:  # a wrong key of either stage is reported before anything trains
        stage_config(stage, run.stage(stage), bases[stage], split_overrides(overrides, stage), resume)
    main = int(os.environ.get("RANK", "0")) == 0
    if main:
        report(f"stage 1/2: tokenizer -> {run.tokenizer.path}; then stage 2/2: prior -> {run.prior.path}")
    with locked_run(run.path):
        outcome = train_tokenizer(run.tokenizer.path, bases["tokenizer"], split_overrides(overrides, "tokenizer"),
                                  resume, deadline, progress)
        if not outcome.finished:
            return outcome
        if outcome.main_process:
            report(outcome.report())
            report(f"stage 2/2: prior -> {run.prior.path}")
        return train_prior(run.prior.path, run.tokenizer.path, bases["prior"], split_overrides(overrides, "prior"),
                           resume, deadline, progress)
