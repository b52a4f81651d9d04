"""The tokenizer's adversarial loss: hinge losses, VQGAN's adaptive weight, the switch-on step, and
the discriminator in checkpoints (exact resume, old checkpoints without it)."""

import json

import pytest
import torch
from conftest import TINY

from libcem.config import ConfigError, build_config
from libcem.errors import LibcemError
from libcem.files import load_tensors
from libcem.generative.data import load_data
from libcem.generative.models.discriminator import Discriminator
from libcem.generative.training.adversarial import adaptive_weight, hinge_d_loss, hinge_g_loss
from libcem.generative.training.checkpoints import valid_window
from libcem.generative.training.tokenizer import TokenizerRunConfig, TokenizerTask
from libcem.generative.training.trainer import Trainer, frozen

ON = ["adversarial.weight=0.5", "adversarial.start_step=3", "train.log_every=1", "train.checkpoint_every=1"]
ADVERSARIAL_METRICS = {"g_loss", "d_loss", "adaptive_weight", "d_real_correct", "d_fake_correct"}


def make(*overrides):
    return build_config(TokenizerRunConfig, TINY, list(overrides))


def fit(cfg, run, resume=False, stop_at=None):
    task = TokenizerTask(cfg, load_data(cfg.data))
    return Trainer(run, cfg, task, progress=False).fit(resume=resume, stop_at=stop_at)


def rows(run):
    """metrics.jsonl without the timing column."""
    out = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in out]


def ckpt(run, step):
    return run / "checkpoints" / f"step_{step:08d}"


def tensors_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def optimizer_state(path):
    return torch.load(path, weights_only=True)["state"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Six tiny steps with the discriminator switched on at step 3, and the same without it."""
    root = tmp_path_factory.mktemp("adversarial")
    fit(make(*ON), root / "on")
    fit(make("train.log_every=1", "train.checkpoint_every=1"), root / "off")
    return root


def test_hinge_losses_on_hand_made_logits():
    real = torch.tensor([2.0, 0.5, -1.0, 1.0])  # relu(1 - real) = 0, 0.5, 2, 0: mean 0.625
    fake = torch.tensor([-3.0, 0.0, 1.0, -0.5])  # relu(1 + fake) = 0, 1, 2, 0.5: mean 0.875
    assert hinge_d_loss(real, fake).item() == 0.75
    assert hinge_g_loss(fake).item() == 0.625
    assert hinge_d_loss(torch.full((3,), 1.0), torch.full((3,), -1.0)).item() == 0.0  # both past the margin


def test_adaptive_weight_is_the_ratio_of_gradient_norms_at_the_last_layer():
    decoder = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        decoder[0].weight.copy_(torch.eye(2))
        decoder[0].bias.zero_()
    y = decoder(torch.tensor([[3.0, 4.0]]))  # the last layer sees h = (3, 4): d y / d W = h, ||h|| = 5
    rec, g = 3 * y.sum(), -y.sum()  # gradients 3h and -h at the last layer: norms 15 and 5
    last = decoder[1].weight
    lam = adaptive_weight(rec, g, last)
    assert lam.item() == (torch.tensor(15.0) / (torch.tensor(5.0) + 1e-4)).item()
    assert not lam.requires_grad
    assert adaptive_weight(rec, g, last, max_weight=2.0).item() == 2.0
    (rec + lam * g).backward()  # the graphs were kept for the backward pass
    assert torch.allclose(last.grad, torch.tensor([[3.0, 4.0]]) * (3 - lam))


def test_discriminator_judges_patches_and_its_init_comes_from_the_generator():
    for size, layers in ((32, 2), (32, 3), (16, 2), (28, 1)):
        d = Discriminator(3, 8, layers)
        out = d(torch.rand(2, 3, size, size))
        assert out.shape == (2, 1, d.patches(size), d.patches(size))
    assert Discriminator(3, 8, 2).patches(32) == 6 and Discriminator(3, 8, 3).patches(32) == 2
    a, b = (Discriminator(1, 8, 2, torch.Generator().manual_seed(5)) for _ in range(2))
    assert tensors_equal(a.state_dict(), b.state_dict())


def test_frozen_parameters_take_no_gradient_inside_the_block():
    net = torch.nn.Linear(2, 2)
    net.bias.requires_grad_(False)
    with frozen(net):
        assert not net.weight.requires_grad
    assert net.weight.requires_grad and not net.bias.requires_grad  # as they were


def test_adversarial_loss_switches_on_at_its_step(runs):
    from libcem.generative.training.adversarial import Adversary

    root = runs
    on, off = rows(root / "on"), rows(root / "off")
    assert [r["step"] for r in on] == [1, 2, 3, 4, 5, 6]
    assert on[:3] == off[:3]  # steps 0..2: the pixel loss only, the same numbers as without it
    assert all(not ADVERSARIAL_METRICS & set(r) for r in on[:3])
    for r in on[3:]:
        assert ADVERSARIAL_METRICS <= set(r) and r["g_loss"] != 0 and r["d_loss"] != 0 and r["adaptive_weight"] > 0
        assert 0 <= r["d_real_correct"] <= 1 and 0 <= r["d_fake_correct"] <= 1
    assert on[3]["loss"] != off[3]["loss"]

    raw = lambda run, step: load_tensors(ckpt(run, step) / "training" / "raw.safetensors")  # noqa: E731
    assert tensors_equal(raw(root / "on", 3), raw(root / "off", 3))
    assert not tensors_equal(raw(root / "on", 5), raw(root / "off", 5))

    cfg = make(*ON)
    fresh = Adversary(cfg.adversarial, cfg.optim, 3, 16, cfg.train.seed + 1).module.state_dict()
    disc = lambda step: load_tensors(ckpt(root / "on", step) / "training" / "discriminator.safetensors")  # noqa: E731
    assert all(tensors_equal(disc(step), fresh) for step in (1, 2, 3))  # untouched before its step
    assert optimizer_state(ckpt(root / "on", 3) / "training" / "discriminator_optimizer.pt") == {}
    assert not tensors_equal(disc(4), fresh)


def test_a_row_averages_the_adversarial_metrics_over_the_steps_that_had_them(runs, tmp_path):
    root = runs
    fit(make(*ON, "train.log_every=2"), tmp_path)
    every, pairs = rows(root / "on"), rows(tmp_path)
    assert "g_loss" not in pairs[0] and pairs[1]["step"] == 4
    assert pairs[1]["g_loss"] == every[3]["g_loss"]  # step 4's row: only step index 3 had it
    assert pairs[2]["g_loss"] == pytest.approx((every[4]["g_loss"] + every[5]["g_loss"]) / 2, abs=2e-6)
    assert not valid_window({"n": 2, "sums": {"g_loss": 1.0}, "counts": {"g_loss": 3}, "seconds": 1.0})
    assert not valid_window({"n": 2, "sums": {}, "counts": {"g_loss": 1}, "seconds": 1.0})


def test_resume_with_the_discriminator_is_bit_identical(runs, tmp_path):
    root = runs
    cfg = make(*ON, "train.checkpoint_every=2")
    fit(cfg, tmp_path, stop_at=5)  # dies after step 5; the last checkpoint (step 4) has a trained discriminator
    assert optimizer_state(ckpt(tmp_path, 4) / "training" / "discriminator_optimizer.pt") != {}
    fit(cfg, tmp_path, resume=True)
    a, b = ckpt(root / "on", 6), ckpt(tmp_path, 6)
    for name in ("model.safetensors", "training/raw.safetensors", "training/discriminator.safetensors"):
        assert tensors_equal(load_tensors(a / name), load_tensors(b / name)), name
    for name in ("optimizer.pt", "discriminator_optimizer.pt"):
        sa, sb = optimizer_state(a / "training" / name), optimizer_state(b / "training" / name)
        assert sa.keys() == sb.keys() and all(tensors_equal(sa[k], sb[k]) for k in sa), name
    assert rows(tmp_path) == rows(root / "on")


def test_checkpoint_without_a_discriminator_resumes_with_a_fresh_one(tmp_path):
    fit(make("train.steps=2"), tmp_path)  # pixel loss only: no discriminator files
    assert not (ckpt(tmp_path, 2) / "training" / "discriminator.safetensors").exists()
    with pytest.warns(UserWarning, match="has no discriminator .* starts fresh"):
        fit(make("train.steps=3", "adversarial.weight=0.5", "adversarial.start_step=0"), tmp_path, resume=True)
    assert (ckpt(tmp_path, 3) / "training" / "discriminator_optimizer.pt").is_file()
    assert "d_loss" in rows(tmp_path)[-1]
    (ckpt(tmp_path, 3) / "training" / "discriminator_optimizer.pt").unlink()
    with pytest.raises(LibcemError, match="holds only part of the discriminator"):
        fit(make("train.steps=4", "adversarial.weight=0.5", "adversarial.start_step=0"), tmp_path, resume=True)


def test_adversarial_settings_are_checked():
    with pytest.raises(ConfigError, match="adversarial.weight"):
        make("adversarial.weight=-1")
    with pytest.raises(ConfigError, match="adversarial.layers"):
        make("adversarial.layers=0")
    cfg = make("adversarial.weight=0.5", "adversarial.layers=3")  # 16-px images: 2, 1, 0 patches left
    with pytest.raises(LibcemError, match="adversarial.layers <= 2"):
        TokenizerTask(cfg, load_data(cfg.data))
    assert TokenizerTask(make(), load_data(make().data)).auxiliary is None  # off by default
