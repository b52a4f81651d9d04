"""Training objectives on problems with exact answers: the flow ODE of Gaussian data in closed form,
the flow loss by hand, and every objective learning a 2-D mixture of two Gaussians."""

import math

import pytest
import torch
from torch import nn

from libcem.config import ConfigError
from libcem.generative.diffusion import OBJECTIVES, SAMPLERS, DiffusionConfig, guided, sample, training_loss
from libcem.generative.diffusion.flow import flow_loss
from libcem.generative.diffusion.samplers import initial_noise

MU, SIGMA = 1.5, 0.5  # data: x0 ~ N(MU, SIGMA^2) in every coordinate


def optimal_velocity(cfg: DiffusionConfig):
    """E[eps - x0 | x_t] for Gaussian data on the path x_t = (1 - t) x0 + t eps; the network time is t * T."""

    def fn(x, t_net):
        t = (t_net.double() / cfg.train_timesteps).view(-1, 1).to(x)
        var = (1 - t) ** 2 * SIGMA**2 + t**2  # Var[x_t]
        centred = x - (1 - t) * MU
        eps = t * centred / var  # E[eps | x_t]
        x0 = MU + (1 - t) * SIGMA**2 * centred / var  # E[x0 | x_t]
        return eps - x0

    return fn


FLOW_SAMPLERS = sorted(n for n, s in SAMPLERS.items() if s.objective == "flow")


@pytest.mark.parametrize("sampler", FLOW_SAMPLERS)
def test_every_flow_sampler_maps_noise_by_the_exact_affine_flow(sampler):
    """The flow ODE of Gaussian data maps noise z to MU + SIGMA * z: check it sample by sample."""
    cfg = DiffusionConfig(objective="flow")
    gens = [torch.Generator().manual_seed(i) for i in range(64)]
    z = initial_noise((8,), [torch.Generator().manual_seed(i) for i in range(64)]).double()
    x = sample(optimal_velocity(cfg), cfg, (8,), gens, steps=200, sampler=sampler).double()
    assert torch.allclose(x, MU + SIGMA * z, atol=0.02)


def test_heun_is_second_order_and_euler_first_order():
    """Halving the step halves Euler's error and quarters Heun's."""
    cfg = DiffusionConfig(objective="flow")
    z = initial_noise((8,), [torch.Generator().manual_seed(i) for i in range(16)]).double()

    def error(sampler, steps):
        gens = [torch.Generator().manual_seed(i) for i in range(16)]
        x = sample(optimal_velocity(cfg), cfg, (8,), gens, steps=steps, sampler=sampler).double()
        return (x - (MU + SIGMA * z)).abs().max().item()

    assert 1.7 < error("euler", 20) / error("euler", 40) < 2.3
    assert 3.4 < error("heun", 20) / error("heun", 40) < 4.6


def test_flow_loss_is_the_velocity_mse_at_logit_normal_times():
    x0 = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    seen = {}

    def zero(x, t):
        seen["x"], seen["t"] = x, t
        return torch.zeros_like(x)

    loss = flow_loss(zero, x0, torch.Generator().manual_seed(0), time_scale=1000)
    g = torch.Generator().manual_seed(0)  # the same draws, in the same order, by hand
    t = torch.sigmoid(torch.randn(6, generator=g))
    noise = torch.randn(x0.shape, generator=g)
    assert torch.allclose(loss, (noise - x0).pow(2).mean())
    assert torch.allclose(seen["t"], t * 1000)
    assert torch.allclose(seen["x"], (1 - t[:, None]) * x0 + t[:, None] * noise)


def test_samplers_fit_one_objective_and_say_so():
    assert DiffusionConfig().sampler == ""  # the objective's default: dpm++ for ddpm, euler for flow
    with pytest.raises(ConfigError, match="'dpm\\+\\+' fits the 'ddpm' objective, not 'flow': use one of euler, heun"):
        DiffusionConfig(objective="flow", sampler="dpm++")
    with pytest.raises(ConfigError, match="use one of dpm\\+\\+, ddim, ddpm"):
        DiffusionConfig(objective="ddpm", sampler="euler")
    with pytest.raises(ConfigError, match="use one of ddpm, flow"):
        DiffusionConfig(objective="edm")
    cfg = DiffusionConfig(objective="flow")
    with pytest.raises(ConfigError, match="'ddim' fits the 'ddpm' objective"):
        sample(optimal_velocity(cfg), cfg, (2,), [torch.Generator()], steps=2, sampler="ddim")


class TinyDenoiser(nn.Module):
    """(x (B, 2), t (B,) in 0..1000, class (B,) or -1 for none) -> (B, 2): an MLP on x, sinusoidal time
    features and a class embedding."""

    def __init__(self, width: int = 128) -> None:
        super().__init__()
        self.freqs = torch.exp(torch.linspace(0, math.log(100.0), 8))
        self.label = nn.Embedding(3, 16)  # classes 0, 1 and 2 = unconditional
        self.net = nn.Sequential(nn.Linear(2 + 16 + 16, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, 2))

    def forward(self, x, t, label):
        angles = (t.float() / 1000)[:, None] * self.freqs
        h = torch.cat([x, angles.sin(), angles.cos(), self.label(label)], 1)
        return self.net(h)


MODES = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])


def mixture(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n points of an equal mixture of N(mode, 0.2^2 I) at the two MODES, and their mode (B,)."""
    label = torch.randint(0, 2, (n,), generator=generator)
    return MODES[label] + 0.2 * torch.randn(n, 2, generator=generator), label


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_every_objective_learns_a_two_mode_mixture(objective):
    """Train a tiny MLP with the objective (10% of labels dropped), then sample each class with guidance:
    the samples land on their class's mode with its spread."""
    cfg = DiffusionConfig(objective=objective, steps=30, guidance=1.5)
    torch.manual_seed(0)
    model = TinyDenoiser()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = training_loss(cfg)
    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        x0, label = mixture(256, g)
        label = torch.where(torch.rand(256, generator=g) < 0.1, 2, label)
        loss = loss_fn(lambda x, t: model(x, t, label), x0, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    for k in (0, 1):
        cond = torch.full((400,), k)
        den = guided(lambda x, t, c: model(x, t, cond if c else torch.full_like(cond, 2)), cfg.guidance)
        x = sample(den, cfg, (2,), [torch.Generator().manual_seed(i) for i in range(400)], cfg.steps, cfg.sampler)
        dist = (x - MODES[k]).norm(dim=1)
        assert (dist < 0.8).float().mean() > 0.95, (objective, k)
        assert (x.mean(0) - MODES[k]).abs().max() < 0.15
        assert 0.1 < x[:, 1].std() < 0.4


def test_flow_is_the_default_and_a_prior_saved_before_keeps_ddpm(tmp_path):
    """Priors and runs saved before flow became the default have no 'objective' key: they were ddpm."""
    import tomli_w

    from libcem.config import build_config, to_dict, with_saved_defaults
    from libcem.generative.runs import StageRun
    from libcem.generative.training.prior import PriorRunConfig
    from libcem.generative.training.stages import stage_config

    assert DiffusionConfig().objective == "flow"
    assert with_saved_defaults(DiffusionConfig, {})["objective"] == "ddpm"
    assert with_saved_defaults(DiffusionConfig, {"objective": "flow"})["objective"] == "flow"
    run = StageRun(tmp_path / "prior")
    run.path.mkdir()
    saved = to_dict(build_config(PriorRunConfig))
    del saved["diffusion"]["objective"]
    run.config.write_text(tomli_w.dumps(saved))
    assert stage_config("prior", run, resume=True).diffusion.objective == "ddpm"
