"""The training loop every libcem model uses: Accelerate, EMA, warmup + cosine, clipping,
metrics, plots, snapshots, atomic checkpoints and exact resume.

A model plugs in through a `Task`: it owns the model and the data and says how to compute a
loss on a batch of indices and how to draw a snapshot. A Task may also train a second network
beside the model with its own optimizer (a GAN's discriminator): its `auxiliary`. Every random
choice of a step comes from a generator seeded by (seed, step), so a resumed run repeats an
uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from libcem.config import dumps_toml, to_dict
from libcem.errors import LibcemError
from libcem.files import atomic_write_bytes
from libcem.generative.data.base import batch_indices
from libcem.generative.runs import StageRun
from libcem.generative.training.checkpoints import (
    clean_partial,
    folder_bytes,
    load_checkpoint,
    save_checkpoint,
)
from libcem.generative.training import trackers
from libcem.generative.training.ema import EMA
from libcem.generative.training.lr_schedule import lr_at
from libcem.generative.training.metrics_log import MetricsLog
from libcem.generative.training.settings import OptimConfig, TrainConfig

PLOT_INTERVAL_S = 15.0  # loss.png is redrawn at most this often (and at the end)


class Task(Protocol):
    model: nn.Module
    n_train: int  # size of the training set that batch indices point into

    def loss(
        self, model: nn.Module, idx: torch.Tensor, generator: torch.Generator, device: torch.device
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss on training images `idx` and detached metrics to average for the log."""

    def step_metrics(self, model: nn.Module) -> dict[str, float]:
        """Metrics read off the model state after a step (e.g. codebook usage)."""

    def snapshot(self, model: nn.Module, path: Path) -> None:
        """Write an image grid (reconstructions, samples) made with `model` to `path`."""

    def export_extra(self) -> dict:
        """Extra JSON for the checkpoint's config.json (e.g. the data source)."""

    # optional: `auxiliary: Auxiliary | None`, a second network trained beside the model


class Auxiliary(Protocol):
    """A second network a Task trains beside its model with its own AdamW (e.g. a GAN's discriminator).

    The Trainer prepares it with Accelerate and, at each step where `begin` says so, steps it after
    the model: one `loss` per micro-batch, on what the model's loss of that micro-batch produced.
    The model's loss may use `module` but never trains it (its parameters are frozen meanwhile). Its
    weights and optimizer state are kept in the checkpoint's training/ folder as NAME.safetensors
    and NAME_optimizer.pt."""

    name: str
    module: nn.Module
    optim: OptimConfig  # its lr (on the model's warmup + cosine schedule), betas, weight decay, clipping

    def begin(self, step: int) -> bool:
        """Called before step `step`'s model loss; True: `module` trains at this step."""

    def loss(
        self, module: nn.Module, micro: int, generator: torch.Generator, device: torch.device
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of the (prepared) `module` on micro-batch `micro` of this step, and its metrics."""


@contextlib.contextmanager
def frozen(module: nn.Module):
    """`module`'s parameters take no gradient inside the block (those that took one before do again after)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@dataclass
class RunResult:
    step: int
    checkpoint: Path
    last_metrics: dict
    finished: bool = True  # False: stopped early (stop_at or the deadline) before train.steps


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """The generator of step `step` on process `rank` (process 0 of a data-parallel run draws what a
    single process draws; the others draw their own noise for their own share of the batch)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step + rank * 7_919_000_003)


def make_accelerator(precision: str, trackers: list = (), logging_dir: Path | None = None):
    """Accelerate's `Accelerator`. A launch of several processes on a machine without CUDA
    (`accelerate launch --multi_gpu --num_processes 2 ...` on CPUs) runs data parallel on the CPU
    with the gloo backend."""
    import os

    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from libcem.device import check_precision, cuda_usable

    check_precision(precision)
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if precision == "fp16" and not torch.cuda.is_available():
        raise LibcemError("precision 'fp16' needs a GPU and none is available here; use bf16 or no")
    if AcceleratorState._shared_state.get("_mixed_precision", precision) != precision:
        # an earlier run in this process (the tokenizer stage, a benchmark) used another precision;
        # the process group (PartialState) is kept
        AcceleratorState._reset_state(reset_partial_state=False)
    try:
        cpu = (several or torch.cuda.is_available()) and not cuda_usable()  # gloo on CPUs; a GPU torch cannot run
        if not trackers:
            return Accelerator(mixed_precision=precision, cpu=cpu)
        from accelerate.utils import ProjectConfiguration

        project = ProjectConfiguration(project_dir=str(logging_dir.parent), logging_dir=str(logging_dir))
        return Accelerator(mixed_precision=precision, cpu=cpu, log_with=list(trackers), project_config=project)
    except ValueError as err:
        raise LibcemError(f"precision '{precision}' is not available here: {err}") from None


class Trainer:
    """Runs `task` for `train.steps` optimizer steps in `run_dir`."""

    def __init__(self, run_dir: Path, cfg, task: Task, progress: bool = True) -> None:
        self.run, self.cfg, self.task, self.progress = Path(run_dir), cfg, task, progress
        self.layout = StageRun(self.run)
        self.tcfg: TrainConfig = cfg.train
        self.ocfg: OptimConfig = cfg.optim
        self.trackers = trackers.make_trackers(self.tcfg.report_to)
        self.acc = make_accelerator(self.tcfg.precision, self.trackers, self.layout.tracker_dir)
        self.log = MetricsLog(self.layout)
        world = self.acc.num_processes
        if self.tcfg.batch_size % (world * self.tcfg.grad_accum):
            raise LibcemError(
                f"train.batch_size={self.tcfg.batch_size} must divide into {world} processes x "
                f"{self.tcfg.grad_accum} accumulation steps"
            )
        self.micro = self.tcfg.batch_size // (world * self.tcfg.grad_accum)
        self._plotted = -math.inf
        self._clear_window()

    def _clear_window(self) -> None:
        """The metrics summed over the steps since the last metrics.jsonl row (`counts`: over how many
        steps each one was reported; a metric of the auxiliary network is only reported where it trains)."""
        self.window: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.n_window, self.window_seconds, self.window_t0 = 0, 0.0, time.perf_counter()

    def _window_state(self) -> dict:
        """The window for a checkpoint's state.json, its sums averaged over processes (every process calls)."""
        names = sorted(self.window)
        sums = {}
        if names:
            means = self.acc.reduce(torch.stack([self.window[k] for k in names]).float(), reduction="mean")
            sums = dict(zip(names, means.tolist()))
        seconds = self.window_seconds + time.perf_counter() - self.window_t0
        return {"window": {"n": self.n_window, "sums": sums, "counts": dict(self.counts), "seconds": seconds}}

    def _restore_window(self, state: dict) -> None:
        window = state.get("window")
        if window and window["n"] > 0:
            self.window = {k: torch.tensor(v, dtype=torch.float32, device=self.acc.device)
                           for k, v in window["sums"].items()}
            self.counts = {k: window.get("counts", {}).get(k, window["n"]) for k in self.window}  # older: n each
            self.n_window, self.window_seconds = window["n"], window["seconds"]

    def _optimizer(self, model: nn.Module, ocfg: OptimConfig | None = None) -> torch.optim.Optimizer:
        ocfg = ocfg or self.ocfg
        params = [p for p in model.parameters() if p.requires_grad]
        fused = {"fused": True} if self.acc.device.type == "cuda" else {}  # one kernel for all parameters
        return torch.optim.AdamW(
            params, lr=ocfg.lr, betas=tuple(ocfg.betas), weight_decay=ocfg.weight_decay, **fused
        )

    def _micro_batches(self, step: int) -> list[torch.Tensor]:
        """This process's micro-batches of global batch `step`."""
        idx = batch_indices(step, self.tcfg.batch_size, self.task.n_train, self.tcfg.seed)
        mine = idx.view(-1, self.acc.num_processes, self.micro)[:, self.acc.process_index]
        return list(mine.view(self.tcfg.grad_accum, self.micro))

    def prepare(self, resume: bool) -> int:
        """Set up model, EMA and optimizer; returns the step to start from."""
        self.run.mkdir(parents=True, exist_ok=True)
        clean_partial(self.layout)
        model = self.task.model
        if self.acc.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # TF32 tensor cores for float32 matmuls and convolutions
            torch.backends.cudnn.allow_tf32 = True
            model.to(self.acc.device)  # the fused optimizer wants its parameters there from the start
        self.ema = EMA(model, self.tcfg.ema_decay) if self.tcfg.ema_decay > 0 else None
        opt = self._optimizer(model)
        self.aux: Auxiliary | None = getattr(self.task, "auxiliary", None)
        aux_opt = self._optimizer(self.aux.module, self.aux.optim) if self.aux else None
        ckpts = self.layout.checkpoints()
        start = 0
        if ckpts and not resume:
            raise LibcemError(
                f"{self.run} already holds checkpoints: pass --resume to continue it, or choose a new --out"
            )
        if ckpts:
            state = load_checkpoint(ckpts[-1], model, self.ema.model if self.ema else None, opt,
                                    (self.aux.name, self.aux.module, aux_opt) if self.aux else None)
            start = state["step"]
            self._restore_window(state)
            if self.acc.is_main_process:
                self.log.truncate_after(start)
        elif self.acc.is_main_process:
            self.log.truncate_after(-1)
        if self.acc.is_main_process:
            atomic_write_bytes(self.layout.config, dumps_toml(self.cfg).encode())
        if self.tcfg.compile:
            model.compile()  # torch.compile of its forward, in place: parameter names and checkpoints unchanged
        if self.trackers:
            self.acc.init_trackers(trackers.PROJECT, config=trackers.flat_config(to_dict(self.cfg)),
                                   init_kwargs={"wandb": {"name": f"{self.run.parent.name}/{self.run.name}"}})
        self.model, self.opt = self.acc.prepare(model, opt)
        if self.aux:
            self.aux_model, self.aux_opt = self.acc.prepare(self.aux.module, aux_opt)
        if self.ema:
            self.ema.model.to(self.acc.device)
        self.acc.wait_for_everyone()
        return start

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        aux_on = self.aux.begin(step) if self.aux else False
        gen = step_generator(self.tcfg.seed, step, self.acc.process_index)
        batches = self._micro_batches(step)
        with frozen(self.aux.module) if self.aux else contextlib.nullcontext():
            sums = self._update(step, self.model, self.opt, self.ocfg, len(batches),
                                lambda i: self.task.loss(self.model, batches[i], gen, self.acc.device), "loss")
        if self.ema:
            self.ema.update(self.acc.unwrap_model(self.model), step)
        if aux_on:
            sums.update(self._update(step, self.aux_model, self.aux_opt, self.aux.optim, len(batches),
                                     lambda i: self.aux.loss(self.aux_model, i, gen, self.acc.device)))
        return sums

    def _update(self, step: int, model: nn.Module, opt, ocfg: OptimConfig, n: int, loss_of,
                loss_name: str | None = None) -> dict[str, torch.Tensor]:
        """One optimizer step of `model` on the mean of `loss_of(i)` over micro-batches i < n; returns
        the metrics averaged over them, with the loss as `loss_name` (None: the metrics name it).
        A loss that is NaN or Inf raises FloatingPointError(loss_name)."""
        for group in opt.param_groups:
            group["lr"] = lr_at(step, self.tcfg.steps, ocfg)
        sums: dict[str, torch.Tensor] = {}
        for i in range(n):
            sync = i == n - 1
            with (contextlib.nullcontext() if sync else self.acc.no_sync(model)), self.acc.autocast():
                loss, metrics = loss_of(i)
            if not torch.isfinite(loss.detach()):
                raise FloatingPointError(loss_name)
            self.acc.backward(loss / n)
            for k, v in ({loss_name: loss.detach(), **metrics} if loss_name else metrics).items():
                sums[k] = sums.get(k, 0) + v.float() / n
        if ocfg.grad_clip > 0:
            self.acc.clip_grad_norm_(model.parameters(), ocfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return sums

    def checkpoint(self, step: int) -> Path | None:
        path = None
        progress = self._window_state()
        if self.acc.is_main_process:
            path = save_checkpoint(
                self.layout,
                step,
                self.acc.unwrap_model(self.model),
                self.ema.model if self.ema else None,
                self.opt,
                self.task.export_extra(),
                self.tcfg.keep_checkpoints,
                progress,
                (self.aux.name, self.acc.unwrap_model(self.aux_model), self.aux_opt) if self.aux else None,
            )
            if self.progress:
                tqdm.write(f"checkpoint {path.name}: {folder_bytes(path) / 2**20:.1f} MiB in {path.parent}")
        self.acc.wait_for_everyone()
        return path

    def inference_model(self) -> nn.Module:
        """The weights a checkpoint's model folder holds: the EMA shadow when enabled, else the live model."""
        return self.ema.model if self.ema else self.acc.unwrap_model(self.model)

    def snapshot(self, step: int) -> None:
        if self.acc.is_main_process:
            self.task.snapshot(self.inference_model(), self.layout.snapshot(step))
            if self.trackers:
                trackers.log_grid(self.acc.trackers, self.layout.snapshot(step), step)

    def _past(self, deadline: float | None) -> bool:
        """True on every process once the main process's clock passes `deadline` (time.monotonic)."""
        if deadline is None:
            return False
        over = torch.tensor([float(self.acc.is_main_process and time.monotonic() > deadline)], device=self.acc.device)
        return bool(self.acc.reduce(over, reduction="sum").item() > 0)

    def fit(self, resume: bool = False, stop_at: int | None = None, deadline: float | None = None) -> RunResult:
        """Train to `train.steps`; or stop early after `stop_at` steps (as a kill would), or with a
        checkpoint at the first logging step past `deadline` (a time.monotonic() value)."""
        start = self.prepare(resume)
        t = self.tcfg
        end = t.steps if stop_at is None else min(stop_at, t.steps)
        self.window_t0, last = time.perf_counter(), {}
        bar = tqdm(range(start, end), initial=start, total=t.steps, disable=not (self.progress and self.acc.is_main_process),
                   desc="train", dynamic_ncols=True)
        for step in bar:
            self.model.train()
            try:
                sums = self.train_step(step)
            except FloatingPointError as err:
                good = self.layout.checkpoints()
                where = f"the last good checkpoint is {good[-1]}" if good else "no checkpoint was written yet"
                whose = "loss" if err.args[0] else f"the {self.aux.name}'s loss"
                raise LibcemError(
                    f"{whose} became NaN or Inf at step {step}; stopped ({where}). "
                    "Try a lower optim.lr or train.precision=no"
                ) from None
            done = step + 1
            for k, v in sums.items():
                self.window[k] = self.window.get(k, 0.0) + v.detach()
                self.counts[k] = self.counts.get(k, 0) + 1
            self.n_window += 1
            if done % t.log_every == 0 or done == end:
                seconds = self.window_seconds + time.perf_counter() - self.window_t0
                last = self._log(done, self.window, self.counts, self.n_window, seconds)
                bar.set_postfix({k: f"{last[k]:.4g}" for k in ("loss", "psnr", "usage") if k in last})
                self._clear_window()
            if done % t.sample_every == 0 or done == t.steps:
                self.snapshot(done)
            out_of_time = done < end and done % t.log_every == 0 and self._past(deadline)
            if done % t.checkpoint_every == 0 or done == t.steps or out_of_time:
                self.checkpoint(done)
            if out_of_time:
                end = done
                break
        bar.close()
        if self.trackers:
            self.acc.end_training()
        ckpts = self.layout.checkpoints()
        return RunResult(end, ckpts[-1] if ckpts else self.run, last, finished=end >= t.steps)

    def _log(self, step: int, window: dict, counts: dict, n: int, seconds: float) -> dict:
        names = sorted(window)
        means = self.acc.reduce(torch.stack([window[k].float() / counts[k] for k in names]), reduction="mean")
        row = {"step": step, **dict(zip(names, means.tolist()))}
        row.update(self.task.step_metrics(self.acc.unwrap_model(self.model)))
        row["lr"] = self.opt.param_groups[0]["lr"]
        row["images_per_s"] = n * self.tcfg.batch_size / max(seconds, 1e-9)
        row = {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in row.items()}
        if self.trackers:
            self.acc.log({k: v for k, v in row.items() if k != "step"}, step=step)
        if self.acc.is_main_process:
            self.log.append(row)
            if step == self.tcfg.steps or time.monotonic() - self._plotted > PLOT_INTERVAL_S:
                self.log.plot()
                self._plotted = time.monotonic()
        return row

