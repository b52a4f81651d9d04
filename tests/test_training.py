import json

import pytest
import torch

from libcem.errors import LibcemError
from libcem.files import load_tensors
from libcem.generative.data import load_data
from libcem.generative.runs import StageRun
from libcem.generative.training.tokenizer import TokenizerRunConfig, TokenizerTask
from libcem.generative.training.trainer import Trainer


def fit(cfg, run, resume=False, stop_at=None):
    task = TokenizerTask(cfg, load_data(cfg.data))
    return Trainer(run, cfg, task, progress=False).fit(resume=resume, stop_at=stop_at)


def weights(ckpt):
    out = load_tensors(ckpt / "training" / "raw.safetensors")
    out.update({"ema." + k: v for k, v in load_tensors(ckpt / "model.safetensors").items()})  # the EMA shadow
    return out


def files(ckpt):
    return sorted(str(p.relative_to(ckpt)) for p in ckpt.rglob("*") if p.is_file())


def test_checkpoint_stores_each_tensor_once(tiny_cfg, tmp_path):
    result = fit(tiny_cfg("train.steps=2"), tmp_path / "ema")
    assert files(result.checkpoint) == ["config.json", "model.safetensors", "training/optimizer.pt",
                                        "training/raw.safetensors", "training/state.json"]
    plain = fit(tiny_cfg("train.steps=2", "train.ema_decay=0"), tmp_path / "plain")
    assert files(plain.checkpoint) == ["config.json", "model.safetensors", "training/optimizer.pt",
                                       "training/state.json"]  # the live weights are the inference weights


def test_resume_without_ema_is_bit_identical(tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.ema_decay=0")
    whole = fit(cfg, tmp_path / "a")
    fit(cfg, tmp_path / "b", stop_at=3)
    resumed = fit(cfg, tmp_path / "b", resume=True)
    a, b = load_tensors(whole.checkpoint / "model.safetensors"), load_tensors(resumed.checkpoint / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_of_the_old_layout_still_loads(tiny_cfg, tmp_path):
    from libcem.generative.training.checkpoints import load_checkpoint
    from libcem.generative.training.ema import EMA

    cfg = tiny_cfg("train.steps=2")
    ckpt = fit(cfg, tmp_path).checkpoint
    old_ema = {k: v + 1 if v.is_floating_point() else v for k, v in load_tensors(ckpt / "model.safetensors").items()}
    from libcem.files import save_tensors

    save_tensors(ckpt / "training" / "ema.safetensors", old_ema)  # the old layout's separate EMA copy wins
    task = TokenizerTask(cfg, load_data(cfg.data))
    ema = EMA(task.model, 0.9)
    opt = torch.optim.AdamW(task.model.parameters())
    assert load_checkpoint(ckpt, task.model, ema.model, opt)["step"] == 2
    assert all(torch.equal(v, old_ema[k]) for k, v in ema.model.state_dict().items())
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(LibcemError, match="not a complete checkpoint .no model.safetensors.; delete it"):
        load_checkpoint(ckpt, task.model, ema.model, opt)


def test_rotated_checkpoints_are_emptied_before_deletion(tiny_cfg, tmp_path):
    """A file deleted on a Drive mount goes to the trash and still counts: its bytes are freed first."""
    import os

    cfg = tiny_cfg("train.steps=2", "train.keep_checkpoints=1")
    first = fit(cfg, tmp_path).checkpoint
    watcher = tmp_path / "watch.safetensors"  # a second name for the file: sees what happens to its bytes
    os.link(first / "model.safetensors", watcher)
    assert watcher.stat().st_size > 0
    fit(tiny_cfg("train.steps=4", "train.keep_checkpoints=1"), tmp_path, resume=True)
    assert [p.name for p in StageRun(tmp_path).checkpoints()] == ["step_00000004"] and not first.exists()
    assert watcher.stat().st_size == 0


def test_resume_after_a_kill_is_bit_identical(tiny_cfg, tmp_path):
    cfg = tiny_cfg()
    whole = fit(cfg, tmp_path / "a")
    fit(cfg, tmp_path / "b", stop_at=5)  # dies after step 5; the last checkpoint is step 4
    assert StageRun(tmp_path / "b").checkpoints()[-1].name == "step_00000004"
    resumed = fit(cfg, tmp_path / "b", resume=True)
    a, b = weights(whole.checkpoint), weights(resumed.checkpoint)
    assert whole.checkpoint.name == resumed.checkpoint.name == "step_00000006"
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows_a = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(l) for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_b] == [r["step"] for r in rows_a] == [2, 4, 6]
    assert rows_a[-1]["loss"] == rows_b[-1]["loss"]


def test_run_folder_contents_and_checkpoint_rotation(tiny_cfg, tmp_path):
    fit(tiny_cfg("train.keep_checkpoints=2"), tmp_path)
    assert [p.name for p in StageRun(tmp_path).checkpoints()] == ["step_00000004", "step_00000006"]
    for name in ("config.toml", "metrics.jsonl", "loss.png", "samples/step_00000003.png", "samples/step_00000006.png"):
        assert (tmp_path / name).is_file(), name
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_existing_run_needs_resume(tiny_cfg, tmp_path):
    fit(tiny_cfg("train.steps=2"), tmp_path)
    with pytest.raises(LibcemError, match="--resume"):
        fit(tiny_cfg("train.steps=2"), tmp_path)


def test_partial_checkpoint_is_ignored(tiny_cfg, tmp_path):
    cfg = tiny_cfg()
    fit(cfg, tmp_path, stop_at=2)
    broken = tmp_path / "checkpoints" / ".tmp-step_00000004"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"half a file")
    result = fit(cfg, tmp_path, resume=True)
    assert result.checkpoint.name == "step_00000006"
    assert not broken.exists()


class NaNAt:
    """Wraps a task so that its loss is NaN from step `at` on (counted in calls)."""

    def __init__(self, task, at):
        self.task, self.at, self.calls = task, at, 0

    def __getattr__(self, name):
        return getattr(self.task, name)

    def loss(self, *args):
        self.calls += 1
        loss, metrics = self.task.loss(*args)
        return (loss * float("nan") if self.calls > self.at else loss), metrics


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tiny_cfg, tmp_path):
    cfg = tiny_cfg()
    task = NaNAt(TokenizerTask(cfg, load_data(cfg.data)), at=3)
    with pytest.raises(LibcemError, match="NaN or Inf at step 3.*step_00000002"):
        Trainer(tmp_path, cfg, task, progress=False).fit()
    assert [p.name for p in StageRun(tmp_path).checkpoints()] == ["step_00000002"]


class Linear(torch.nn.Linear):
    kind = "toy"

    def __init__(self):
        super().__init__(3, 1)
        self.cfg = TokenizerRunConfig()

    def metadata(self):
        return {}


class LinearTask:
    """Least squares on 16 fixed points: the trainer's machinery with no EM in the way."""

    n_train = 16

    def __init__(self):
        torch.manual_seed(0)
        self.model = Linear()
        g = torch.Generator().manual_seed(1)
        self.x, self.y = torch.randn(16, 3, generator=g), torch.randn(16, 1, generator=g)

    def loss(self, model, idx, generator, device):
        loss = ((model(self.x[idx]) - self.y[idx]) ** 2).mean()
        return loss, {}

    def step_metrics(self, model):
        return {}

    def snapshot(self, model, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")

    def export_extra(self):
        return {}


def test_gradient_accumulation_equals_one_big_batch(tiny_cfg, tmp_path):
    def final(*overrides):
        cfg = tiny_cfg("train.ema_decay=0", *overrides)
        task = LinearTask()
        Trainer(tmp_path / "_".join(overrides or ("one",)), cfg, task, progress=False).fit()
        return task.model.weight.detach().clone()

    one, four = final(), final("train.grad_accum=4")
    assert torch.allclose(one, four, atol=1e-6)
    assert not torch.allclose(one, final("train.batch_size=4"), atol=1e-4)  # a different batch does differ


def test_train_compile_compiles_the_model_in_place_and_keeps_its_parameter_names(tiny_cfg, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **kw: calls.append(type(self).__name__))
    cfg = tiny_cfg("train.steps=2")
    Trainer(tmp_path / "plain", cfg, TokenizerTask(cfg, load_data(cfg.data)), progress=False).prepare(resume=False)
    assert calls == []
    cfg = tiny_cfg("train.steps=2", "train.compile=true")
    task = TokenizerTask(cfg, load_data(cfg.data))
    trainer = Trainer(tmp_path / "compiled", cfg, task, progress=False)
    trainer.prepare(resume=False)
    assert calls == ["Tokenizer"]
    assert trainer.acc.unwrap_model(trainer.model) is task.model
