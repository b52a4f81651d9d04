"""Text to image with a trained prior: `Pipeline.from_pretrained("runs/fr")("a red fern ...", n=4)`.

prompt -> text encoder -> classifier-free-guided diffusers sampler over the prior (EMA weights)
-> latent code vectors -> nearest codes -> tokenizer decoder -> images (n, C, H, W) in [0, 1].
Image i of a call is drawn from its own generator seeded by (seed, i), so it does not depend on
the batch size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from libcem.files import read_record, resolve_model_dir
from libcem.config import from_dict
from libcem.device import default_device
from libcem.generative.diffusion import DiffusionConfig, guided, sample, sampling_scheduler
from libcem.errors import LibcemError
from libcem.generative.models.prior import PriorTransformer
from libcem.generative.models.quantizer import nearest_code
from libcem.generative.models.tokenizer import Tokenizer
from libcem.generative.text import TextEncoder, build_encoder
from libcem.generative.text.cache import pad_tokens


def image_generator(seed: int, index: int) -> torch.Generator:
    """The generator of image `index` of a call with `seed`."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def locate(path: str | Path) -> tuple[Path, Path]:
    """A two-stage run (RUN/prior), a prior run folder or a prior checkpoint -> (prior model folder, tokenizer)."""
    path = Path(path).expanduser()
    if (path / "prior").is_dir():
        path = path / "prior"
    model_dir = resolve_model_dir(path)
    kind = read_record(model_dir).get("kind")
    if kind != PriorTransformer.kind:
        hint = " (train a prior on it with: libcem train prior --tokenizer PATH --out RUN)" if kind == "tokenizer" else ""
        raise LibcemError(f"{model_dir} holds a '{kind}', not a prior{hint}")
    for candidate in (path / "tokenizer", model_dir.parent.parent / "tokenizer"):
        if candidate.is_dir():
            return model_dir, candidate
    raise LibcemError(f"no tokenizer/ folder next to the prior in {path}; was it trained with libcem train prior?")


class Pipeline:
    """A trained prior, its frozen tokenizer and its text encoder, ready to sample."""

    def __init__(self, prior: PriorTransformer, tokenizer: Tokenizer, encoder: TextEncoder,
                 diffusion: DiffusionConfig, snap: bool = True, prompts: list[str] = ()) -> None:
        self.prior, self.tokenizer, self.encoder, self.diffusion = prior, tokenizer, encoder, diffusion
        self.snap, self.prompts = snap, list(prompts)
        self.device = next(prior.parameters()).device

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device | None = None) -> "Pipeline":
        """Load from `libcem train` output: RUN (two stages), RUN/prior, or a prior checkpoint folder."""
        device = device or default_device()
        model_dir, tok_dir = locate(path)
        record = read_record(model_dir)
        prior = PriorTransformer.from_pretrained(model_dir, device)  # EMA weights when trained with EMA
        tokenizer = Tokenizer.from_pretrained(tok_dir, device)
        encoder = build_encoder(record["text_encoder"], record.get("vocabulary", []))
        if encoder.dim != prior.text_dim:
            raise LibcemError(f"text encoder '{encoder.name}' gives {encoder.dim} numbers per token; the prior expects {prior.text_dim}")
        diffusion = from_dict(DiffusionConfig, record["diffusion"])
        sampling_scheduler(diffusion, diffusion.sampler)  # imports diffusers now, not inside the first timed call
        return cls(prior, tokenizer, encoder, diffusion, record.get("snap", True), record.get("prompts", []))

    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if any(not p.strip() for p in prompts):
            raise LibcemError("empty prompt: pass some text, e.g. " + repr(self.prompts[0] if self.prompts else "a red fern fractal"))
        distinct = sorted(set(prompts))
        tokens, mask = pad_tokens([self.encoder.encode([p]) for p in distinct])
        where = torch.tensor([distinct.index(p) for p in prompts])
        return tokens[where], mask[where]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, D, h, w) -> images (B, C, H, W) in [0, 1]."""
        tok = self.tokenizer
        z = self.prior.denormalise(latents).to(tok.quantizer.codebook.device)
        if self.snap:
            b, d, h, w = z.shape
            codes = nearest_code(z.permute(0, 2, 3, 1).reshape(-1, d).float(), tok.quantizer.codebook)
            return tok.decode(codes.view(b, h, w))
        return ((tok.decoder(z) + 1) / 2).clamp(0, 1)

    def save_grid(self, prompts: list[str], n: int, path: Path, seed: int = 0, upscale: int = 2) -> Path:
        """A PNG grid of `n` images per prompt, one row per prompt."""
        from libcem.imaging import grid, save_png

        save_png(grid(self(prompts, n=n, seed=seed), cols=n), path, upscale=upscale)
        return path

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        n: int = 1,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int = 0,
        sampler: str | None = None,
        batch_size: int = 50,
        progress: bool = False,
    ) -> torch.Tensor:
        """`n` images per prompt, (len(prompts) * n, C, H, W) floats in [0, 1] on the CPU, prompt-major.

        steps, guidance and sampler default to the prior's training config (20, 3.0, dpm++).
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if n < 1 or not prompts:
            raise LibcemError("nothing to sample: give at least one prompt and n >= 1")
        steps = steps or self.diffusion.steps
        guidance = self.diffusion.guidance if guidance is None else guidance
        sampler = sampler or self.diffusion.sampler
        all_prompts = [p for p in prompts for _ in range(n)]
        tokens, mask = self.encode_prompts(all_prompts)
        was_training = self.prior.training
        self.prior.eval()
        out = []
        starts = range(0, len(all_prompts), batch_size)
        for i in tqdm(starts, desc="sample", disable=not progress or len(starts) < 2):
            j = min(i + batch_size, len(all_prompts))
            tk, mk = tokens[i:j].to(self.device), mask[i:j].to(self.device)
            den = guided(lambda x, t, c: self.prior(x, t, tk, mk if c else torch.zeros_like(mk)), guidance)
            gens = [image_generator(seed, k) for k in range(i, j)]
            shape = (self.prior.latent_dim, self.prior.latent_size, self.prior.latent_size)
            latents = sample(den, self.diffusion, shape, gens, steps, sampler, self.device)
            out.append(self.decode(latents).float().cpu())
        self.prior.train(was_training)
        return torch.cat(out)
