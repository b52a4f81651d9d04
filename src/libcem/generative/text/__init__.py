"""Text encoders behind one registry, and the cache of the training captions' embeddings."""

from libcem.generative.text.cache import CaptionEmbeddings, embed_captions
from libcem.generative.text.encoders import (
    ENCODERS,
    TextEncoder,
    build_encoder,
    default_encoder,
)

__all__ = ["CaptionEmbeddings", "embed_captions", "ENCODERS", "TextEncoder", "build_encoder", "default_encoder"]
