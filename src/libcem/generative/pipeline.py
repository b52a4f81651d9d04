"""Text to image with a trained prior: `Pipeline.from_pretrained("runs/fr")("a red fern ...", n=4)`.

prompt -> text encoder -> classifier-free-guided diffusers sampler over the prior (EMA weights)
-> latent code vectors -> nearest codes -> tokenizer decoder -> images (n, C, H, W) in [0, 1]
(a tensor by default; `output_type="pil"` gives PIL images, "np" a uint8 array).
Image i of a call is drawn from its own generator seeded by (seed, i), so it does not depend on
the batch size. `save_pretrained(OUT)` writes a model to share (weights, configs, a model card);
`from_pretrained` loads a run, an export or `hf:USER/NAME` from the Hugging Face Hub.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from libcem.config import ConfigError, from_dict, with_saved_defaults
from libcem.device import resolve_device
from libcem.errors import LibcemError
from libcem.generative.diffusion import (
    DiffusionConfig,
    guided,
    sample,
    sampling_scheduler,
)
from libcem.generative.diffusion.samplers import resolve_sampler
from libcem.generative.diffusion.guidance import valid_interval
from libcem.generative.models.prior import PriorTransformer
from libcem.generative.models.tokenizer import Tokenizer
from libcem.generative.runs import ExportFolder, resolve_prior, stage_runs_of
from libcem.generative.text import TextEncoder, build_encoder, embed_captions


OUTPUT_TYPES = ("pt", "pil", "np")


def as_output(images: torch.Tensor, output_type: str):
    """Images (N, C, H, W) in [0, 1] as a tensor ("pt"), PIL images ("pil") or uint8 (N, H, W, C) ("np")."""
    if output_type == "pt":
        return images
    from PIL import Image

    from libcem.imaging import to_uint8

    array = to_uint8(images)
    if images.shape[1] == 1:
        array = array.reshape(*array.shape[:3], 1)
    return array if output_type == "np" else [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in array]


def record_strings(record: dict, key: str, where: Path) -> list[str]:
    """A list of strings from a prior's config.json (vocabulary, prompts)."""
    values = record.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise LibcemError(f"{where}: '{key}' must be a list of strings")
    return values


def image_generator(seed: int, index: int) -> torch.Generator:
    """The generator of image `index` of a call with `seed`."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class Pipeline:
    """A trained prior, its frozen tokenizer and its text encoder, ready to sample."""

    def __init__(self, prior: PriorTransformer, tokenizer: Tokenizer, encoder: TextEncoder,
                 diffusion: DiffusionConfig, snap_to_codes: bool = True, prompts: list[str] = (),
                 record: dict | None = None) -> None:
        self.prior, self.tokenizer, self.encoder, self.diffusion = prior, tokenizer, encoder, diffusion
        self.snap_to_codes, self.prompts = snap_to_codes, list(prompts)
        self.record = record or {}  # the prior's config.json (data source, training config) when loaded
        self.tokenizer_record: dict = {}  # the tokenizer's config.json when loaded
        self.source: Path | None = None  # the prior's model folder it was loaded from
        self.device = next(prior.parameters()).device

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device | None = None) -> "Pipeline":
        """Load from `libcem train` output (RUN, RUN/prior, a prior checkpoint folder), an export
        (`libcem export`, `save_pretrained`) or `hf:USER/NAME[@REVISION]` (downloaded from the Hugging Face Hub)."""
        from libcem.files import read_record
        from libcem.generative import hub

        device = resolve_device(device)
        found = resolve_prior(hub.download(str(path)) if hub.is_hub_id(path) else path, PriorTransformer.kind)
        record, where = found.record, found.model_dir / "config.json"
        if not isinstance(record.get("text_encoder"), str) or not isinstance(record.get("snap", True), bool):
            raise LibcemError(f"{where}: 'text_encoder' must be a name and 'snap' true or false")
        try:
            diffusion = from_dict(DiffusionConfig, with_saved_defaults(DiffusionConfig, record.get("diffusion", {})),
                                  prefix="diffusion.")
        except ConfigError as err:
            raise LibcemError(f"{where}: {err}") from None
        vocabulary, prompts = record_strings(record, "vocabulary", where), record_strings(record, "prompts", where)
        prior = PriorTransformer.from_pretrained(found.model_dir, device, record)  # EMA weights when trained with EMA
        tokenizer = Tokenizer.from_pretrained(found.tokenizer_dir, device)
        if tokenizer.cfg.latent_dim != prior.latent_dim:
            raise LibcemError(f"{found.tokenizer_dir} has {tokenizer.cfg.latent_dim} numbers per code; the prior "
                              f"in {found.model_dir} models {prior.latent_dim}")
        encoder = build_encoder(record["text_encoder"], vocabulary)
        if encoder.dim != prior.text_dim:
            raise LibcemError(f"text encoder '{encoder.name}' gives {encoder.dim} numbers per token; the prior expects {prior.text_dim}")
        sampling_scheduler(diffusion, diffusion.sampler)  # imports diffusers now, not inside the first timed call
        pipe = cls(prior, tokenizer, encoder, diffusion, record.get("snap", True), prompts, record)
        pipe.tokenizer_record, pipe.source = read_record(found.tokenizer_dir), found.model_dir
        return pipe

    def save_pretrained(self, path: str | Path, name: str | None = None) -> ExportFolder:
        """Write a self-contained model to share into folder `path`: both model folders (inference
        weights), model_index.json, a sample grid and a model card (README.md) with the data, the
        training steps and time and the last logged metrics of the run it came from."""
        import json
        import shutil

        from libcem import __version__
        from libcem.config import to_dict
        from libcem.files import atomic_write_bytes, atomic_write_json, save_model
        from libcem.generative.model_card import card_text

        out = ExportFolder(path)
        own = ("kind", "config", "metadata", "libcem_version")
        prior_extra = {k: v for k, v in self.record.items() if k not in own}
        prior_extra.update(diffusion=to_dict(self.diffusion), snap=self.snap_to_codes, prompts=self.prompts,
                           text_encoder=self.encoder.name, vocabulary=list(self.encoder.vocabulary or []))
        save_model(out.prior, self.prior, prior_extra)
        save_model(out.tokenizer, self.tokenizer, {k: v for k, v in self.tokenizer_record.items() if k not in own})
        prior_run, tokenizer_run = stage_runs_of(self.source) if self.source else (None, None)
        grid = prior_run.latest_snapshot() if prior_run else None
        if grid is None and self.source and ExportFolder(self.source.parent).samples.is_file():
            grid = ExportFolder(self.source.parent).samples  # an export saved again
        if grid is not None:
            shutil.copyfile(grid, out.samples)
        else:
            self.save_grid(self.prompts[:4] or ["a red fern fractal"], 6, out.samples)
        name = name or (prior_run.path.parent.name if prior_run else out.path.resolve().name)
        text = card_text(name, json.loads((out.prior / "config.json").read_text()),
                         json.loads((out.tokenizer / "config.json").read_text()), prior_run, tokenizer_run)
        atomic_write_bytes(out.card, text.encode())
        atomic_write_json(out.index, {"library": "libcem", "libcem_version": __version__,
                                      "prior": out.prior.name, "tokenizer": out.tokenizer.name})
        return out

    @property
    def image_size(self) -> int:
        """The side of the images it draws."""
        return self.prior.latent_size * self.tokenizer.cfg.downsample

    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> their token embeddings (B, L, E) and mask (B, L), each distinct prompt encoded once."""
        return self._embed(prompts).lookup(torch.arange(len(prompts)))

    def _embed(self, prompts: list[str]):
        if any(not p.strip() for p in prompts):
            raise LibcemError("empty prompt: pass some text, e.g. " + repr(self.prompts[0] if self.prompts else "a red fern fractal"))
        return embed_captions(self.encoder, prompts, batch=1)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, D, h, w) -> images (B, C, H, W) in [0, 1]."""
        return self.tokenizer.from_latents(self.prior.denormalise(latents), self.snap_to_codes)

    def save_grid(self, prompts: list[str], n: int, path: Path, seed: int = 0, upscale: int = 2) -> Path:
        """A PNG grid of `n` images per prompt, one row per prompt."""
        from libcem.imaging import grid, save_png

        save_png(grid(self(prompts, n=n, seed=seed), cols=n), path, upscale=upscale)
        return path

    def _settings(self, n: int, steps: int | None, guidance: float | None, seed: int, sampler: str | None,
                  batch_size: int, interval: tuple[float, float] | None = None
                  ) -> tuple[int, float, str, tuple[float, float]]:
        """The request's steps, guidance, sampler and guidance interval (defaults from the prior's
        config), checked."""
        steps = self.diffusion.steps if steps is None else steps
        guidance = self.diffusion.guidance if guidance is None else guidance
        given = self.diffusion.guidance_interval if interval is None else interval
        try:
            interval = tuple(float(v) for v in given)
        except (TypeError, ValueError):
            interval = ()
        if not valid_interval(interval):
            raise LibcemError(f"guidance_interval must be two numbers lo < hi in [0, 1], got {given!r}")
        sampler = sampler or self.diffusion.sampler
        if n < 1:
            raise LibcemError("nothing to sample: give at least one prompt and n >= 1")
        if batch_size < 1:
            raise LibcemError("batch_size must be >= 1")
        if not 1 <= steps <= self.diffusion.train_timesteps:
            raise LibcemError(f"steps must be 1..{self.diffusion.train_timesteps} (the prior's training timesteps), got {steps}")
        if not (math.isfinite(guidance) and guidance >= 0):
            raise LibcemError(f"guidance must be a finite number >= 0, got {guidance}")
        if not 0 <= seed < 2**63:
            raise LibcemError(f"seed must be a whole number from 0 to 2**63 - 1, got {seed}")
        sampler = resolve_sampler(self.diffusion, sampler)  # "" -> the objective's default; a ConfigError unless it fits
        return steps, float(guidance), sampler, interval

    @torch.no_grad()
    def generate(
        self,
        prompt: str | list[str],
        n: int = 1,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int = 0,
        sampler: str | None = None,
        batch_size: int = 50,
        progress: bool = False,
        guidance_interval: tuple[float, float] | None = None,
    ) -> Iterator[torch.Tensor]:
        """`n` images per prompt, prompt-major, as batches of at most `batch_size` images (B, C, H, W)
        in [0, 1] on the CPU: made one batch at a time, so any `n` fits in memory.

        steps, guidance, sampler and guidance_interval (the noise levels where guidance applies, 0 =
        data, 1 = pure noise) default to the prior's config (20, 3.0, the objective's sampler, (0, 1)).
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise LibcemError("nothing to sample: give at least one prompt and n >= 1")
        steps, guidance, sampler, interval = self._settings(n, steps, guidance, seed, sampler, batch_size,
                                                            guidance_interval)
        text = self._embed(prompts)  # each distinct prompt encoded once
        total = len(prompts) * n
        was_training = self.prior.training
        self.prior.eval()
        starts = range(0, total, batch_size)
        try:
            for i in tqdm(starts, desc="sample", disable=not progress or len(starts) < 2):
                j = min(i + batch_size, total)
                tk, mk = text.lookup(torch.arange(i, j) // n)
                tk, mk = tk.to(self.device), mk.to(self.device)
                den = guided(lambda x, t, c: self.prior(x, t, tk, mk if c else torch.zeros_like(mk)), guidance,
                             interval, self.diffusion.train_timesteps)
                gens = [image_generator(seed, k) for k in range(i, j)]
                shape = (self.prior.latent_dim, self.prior.latent_size, self.prior.latent_size)
                latents = sample(den, self.diffusion, shape, gens, steps, sampler, self.device)
                yield self.decode(latents).float().cpu()
        finally:
            self.prior.train(was_training)

    def __call__(self, prompt: str | list[str], n: int = 1, steps: int | None = None, guidance: float | None = None,
                 seed: int = 0, sampler: str | None = None, batch_size: int = 50, progress: bool = False,
                 output_type: str = "pt", guidance_interval: tuple[float, float] | None = None):
        """`n` images per prompt, prompt-major, all at once (`generate` gives them batch by batch):
        output_type "pt" (default) a tensor (len(prompts) * n, C, H, W) of floats in [0, 1] on the CPU;
        "pil" a list of PIL images; "np" a uint8 array (N, H, W, C)."""
        if output_type not in OUTPUT_TYPES:
            raise LibcemError(f"output_type '{output_type}': use one of {', '.join(OUTPUT_TYPES)}")
        images = torch.cat(list(self.generate(prompt, n, steps, guidance, seed, sampler, batch_size, progress,
                                              guidance_interval)))
        return as_output(images, output_type)
