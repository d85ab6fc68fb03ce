"""A raw encoded image as the request body (``Content-Type: image/jpeg``, ``image/png`` or
``image/webp``): one row, for pipelines whose first step has an image preprocess."""

from __future__ import annotations

from ..errors import UnsupportedMediaType
from ..preprocess import MEDIA_TYPES
from .base import Decoded, InputField

__all__ = ["MEDIA_TYPES", "decode"]


def decode(body: bytes, fields: list[InputField], echo: bool) -> Decoded:
    images = [f for f in fields if f.image is not None]
    if not images:
        raise UnsupportedMediaType(
            "this pipeline takes tensors, not an image body; an image body needs a pipeline "
            "whose first step has 'preprocess: {kind: image}'",
            "Content-Type",
        )
    # The body is the image; the binary is never echoed as original_data.
    return Decoded([{images[0].name: body}], num_rows=1)
