"""Samplers on a problem with an exact answer: Gaussian data, whose optimal denoiser is known in closed form."""

import pytest
import torch

from libcem.generative.diffusion import (
    DiffusionConfig,
    guided,
    sample,
    training_scheduler,
)
from libcem.generative.diffusion.samplers import SAMPLERS, initial_noise
from libcem.generative.diffusion.targets import PREDICTIONS

MU, SIGMA = 1.5, 0.5  # data: x0 ~ N(MU, SIGMA^2) in every coordinate


def optimal_denoiser(cfg: DiffusionConfig):
    """E[target | x_t] for Gaussian data under the DDPM forward process x_t = a x0 + b eps."""
    abar = training_scheduler(cfg).alphas_cumprod.double()

    def fn(x, t):
        a, b = abar[t].sqrt().view(-1, 1).to(x), (1 - abar[t]).sqrt().view(-1, 1).to(x)
        var = a**2 * SIGMA**2 + b**2  # Var[x_t]
        eps = b * (x - a * MU) / var  # E[eps | x_t]
        x0 = MU + a * SIGMA**2 * (x - a * MU) / var  # E[x0 | x_t]
        return {"epsilon": eps, "v_prediction": a * eps - b * x0, "sample": x0}[cfg.prediction]

    return fn


@pytest.mark.parametrize("sampler,steps", [("ddim", 200), ("dpm++", 20)])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_samplers_reach_the_gaussian_mean_and_variance(sampler, steps, prediction):
    cfg = DiffusionConfig(objective="ddpm", prediction=prediction)
    gens = [torch.Generator().manual_seed(i) for i in range(4000)]
    x = sample(optimal_denoiser(cfg), cfg, (4,), gens, steps=steps, sampler=sampler).double()
    # 16000 draws: the standard error of the mean is 0.004, of the std about 0.003
    assert abs(x.mean().item() - MU) < 0.015
    assert abs(x.std().item() - SIGMA) < 0.015


def test_ddim_discretisation_error_shrinks_with_steps():
    """DDIM is first order: its error in the standard deviation falls as the step count grows."""
    cfg = DiffusionConfig(objective="ddpm")
    errors = []
    for steps in (10, 40, 160):
        gens = [torch.Generator().manual_seed(i) for i in range(1000)]
        x = sample(optimal_denoiser(cfg), cfg, (4,), gens, steps=steps, sampler="ddim").double()
        errors.append(abs(x.std().item() - SIGMA))
    assert errors[0] > errors[1] > errors[2]


def test_deterministic_samplers_map_noise_by_the_exact_affine_flow():
    """The probability-flow ODE of Gaussian data is x_T -> MU + SIGMA * x_T: check it sample by sample."""
    cfg = DiffusionConfig(objective="ddpm", prediction="epsilon")
    gens = [torch.Generator().manual_seed(i) for i in range(64)]
    z = initial_noise((8,), [torch.Generator().manual_seed(i) for i in range(64)]).double()
    x = sample(optimal_denoiser(cfg), cfg, (8,), gens, steps=20, sampler="dpm++").double()
    assert torch.allclose(x, MU + SIGMA * z, atol=0.02)


def test_ddpm_sampler_noise_is_per_image():
    cfg = DiffusionConfig(objective="ddpm")
    den = optimal_denoiser(cfg)
    one = sample(den, cfg, (3,), [torch.Generator().manual_seed(7)], steps=10, sampler="ddpm")
    four = sample(den, cfg, (3,), [torch.Generator().manual_seed(s) for s in (1, 7, 2, 3)], steps=10, sampler="ddpm")
    assert torch.allclose(one[0], four[1], atol=1e-6)


def test_guidance_scale_one_is_the_conditional_prediction():
    calls = []

    def den(x, t, conditioned):
        calls.append(conditioned)
        return x * (2.0 if conditioned else -3.0) + t.view(-1, 1)

    x, t = torch.randn(5, 2), torch.arange(5)
    assert torch.equal(guided(den, 1.0)(x, t), den(x, t, True))
    assert torch.allclose(guided(den, 0.0)(x, t), den(x, t, False))
    assert torch.allclose(guided(den, 3.0)(x, t), den(x, t, False) + 3 * (den(x, t, True) - den(x, t, False)))


def test_guidance_interval_guides_only_the_rows_whose_noise_level_is_inside():
    calls = []

    def den(x, t, conditioned):
        calls.append(conditioned)
        return x * (2.0 if conditioned else -3.0) + t.view(-1, 1)

    x, t = torch.randn(5, 2), torch.tensor([0, 250, 500, 750, 1000])  # noise levels 0, .25, .5, .75, 1
    full = den(x, t, False) + 3 * (den(x, t, True) - den(x, t, False))
    out = guided(den, 3.0, (0.25, 0.75), time_scale=1000)(x, t)
    inside = torch.tensor([False, True, True, True, False])
    assert torch.allclose(out[inside], full[inside]) and torch.equal(out[~inside], den(x, t, True)[~inside])
    calls.clear()
    assert torch.equal(guided(den, 3.0, (0.0, 0.2), time_scale=1000)(x[3:], t[3:]), den(x[3:], t[3:], True))
    assert calls == [True, True]  # no unconditional pass where no row is guided
    assert torch.allclose(guided(den, 3.0, (0.0, 1.0), time_scale=1000)(x, t), full)


def test_a_guidance_interval_is_two_ordered_numbers_in_0_1():
    from libcem.config import ConfigError

    assert DiffusionConfig(guidance_interval=(0.0, 0.85)).guidance_interval == (0.0, 0.85)
    for bad in ((0.5, 0.5), (0.9, 0.1), (-0.1, 1.0), (0.0, 1.5), (0.0,), (0.0, float("nan"))):
        with pytest.raises(ConfigError, match="guidance_interval"):
            DiffusionConfig(guidance_interval=bad)


def test_loss_is_plain_mse_without_weighting_and_min_snr_weights_are_exact():
    from libcem.generative.diffusion.loss import diffusion_loss, snr_weights

    sched = training_scheduler(DiffusionConfig(objective="ddpm"))
    x0 = torch.randn(6, 3)
    loss = diffusion_loss(lambda x, t: torch.zeros_like(x), x0, sched, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)  # the same draws, in the same order, by hand
    t = torch.randint(0, 1000, (6,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    assert torch.allclose(loss, sched.get_velocity(x0, noise, t).pow(2).mean())
    abar = sched.alphas_cumprod[t]
    snr = abar / (1 - abar)
    # v-prediction: min(SNR, g) / (SNR + 1) = abar where SNR < g, and g (1 - abar) elsewhere
    expect = torch.where(snr < 5.0, abar, 5.0 * (1 - abar))
    assert torch.allclose(snr_weights(sched, t, gamma=5.0), expect.float(), atol=1e-6)


@pytest.mark.parametrize("sampler", sorted(n for n, s in SAMPLERS.items() if s.objective == "ddpm"))
@pytest.mark.parametrize("prediction", sorted(PREDICTIONS))
def test_every_registered_sampler_and_target_reach_the_gaussian(sampler, prediction):
    """The registries' contract: any DDPM sampler with any prediction target integrates to the data law
    (the flow samplers' closed-form test is in tests/test_objectives.py)."""
    cfg = DiffusionConfig(objective="ddpm", prediction=prediction)
    gens = [torch.Generator().manual_seed(i) for i in range(2000)]
    x = sample(optimal_denoiser(cfg), cfg, (4,), gens, steps=100, sampler=sampler).double()
    assert abs(x.mean().item() - MU) < 0.03
    assert abs(x.std().item() - SIGMA) < 0.03


def test_an_unknown_sampler_or_target_is_a_config_error_naming_the_registry():
    from libcem.config import ConfigError

    with pytest.raises(ConfigError, match="dpm\\+\\+, ddim, ddpm, euler, heun"):
        DiffusionConfig(sampler="lms")
    with pytest.raises(ConfigError, match="v_prediction, epsilon, sample"):
        DiffusionConfig(prediction="x")
