"""The training captions' embeddings, computed once (one encoder call per distinct caption)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from libcem.generative.text.encoders import TextEncoder


@dataclass
class CaptionEmbeddings:
    """Distinct captions and their padded token embeddings; `index[i]` is image i's caption."""

    captions: list[str]
    tokens: torch.Tensor  # (K, L, E)
    mask: torch.Tensor  # (K, L) bool
    index: torch.Tensor  # (N,) long, into captions

    def lookup(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images idx (B,) -> their caption tokens (B, L, E) and mask (B, L)."""
        k = self.index[idx]
        return self.tokens[k], self.mask[k]


def pad_tokens(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate (tokens, mask) chunks of different lengths L, zero-padding to the longest."""
    length = max(t.shape[1] for t, _ in parts)
    tokens = torch.cat([F.pad(t, (0, 0, 0, length - t.shape[1])) for t, _ in parts])
    mask = torch.cat([F.pad(m, (0, length - m.shape[1]), value=False) for _, m in parts])
    return tokens, mask


def embed_captions(encoder: TextEncoder, captions: list[str], batch: int = 256) -> CaptionEmbeddings:
    """Encode each distinct caption of `captions` once, in batches."""
    distinct = sorted(set(captions))
    where = {c: i for i, c in enumerate(distinct)}
    parts = [encoder.encode(distinct[i : i + batch]) for i in range(0, len(distinct), batch)]
    tokens, mask = pad_tokens(parts)
    index = torch.tensor([where[c] for c in captions], dtype=torch.long)
    return CaptionEmbeddings(distinct, tokens, mask, index)
