"""ODE samplers of a velocity field dx/dt = v(x, t), integrated from t = 1 (noise) to t = 0 (data)
on a uniform time grid: plain functions of a callable, as in k-diffusion (Karras et al. 2022)."""

from __future__ import annotations

from typing import Callable, Iterable

import torch

Velocity = Callable[[torch.Tensor, float], torch.Tensor]  # (x (B, ...), t in [0, 1]) -> dx/dt


def time_grid(steps: int) -> list[float]:
    """steps + 1 times from 1 down to 0, evenly spaced."""
    return [1.0 - i / steps for i in range(steps + 1)]


def euler(velocity: Velocity, x: torch.Tensor, times: list[float], progress: Callable[[Iterable], Iterable] | None = None) -> torch.Tensor:
    """Explicit Euler: x <- x + (t_next - t) v(x, t); one evaluation per step."""
    pairs = list(zip(times[:-1], times[1:]))
    for t, t_next in progress(pairs) if progress else pairs:
        x = x + (t_next - t) * velocity(x, t)
    return x


def heun(velocity: Velocity, x: torch.Tensor, times: list[float], progress: Callable[[Iterable], Iterable] | None = None) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, Algorithm 1); two evaluations per step, the
    last step included (a flow's velocity stays finite at t = 0)."""
    pairs = list(zip(times[:-1], times[1:]))
    for t, t_next in progress(pairs) if progress else pairs:
        d = velocity(x, t)
        x_euler = x + (t_next - t) * d
        x = x + (t_next - t) * 0.5 * (d + velocity(x_euler, t_next))
    return x
