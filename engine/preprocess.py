"""The image preprocess step: encoded images (JPEG, PNG, WebP) into a model's image input.

Decoding uses Pillow, with JPEG draft mode (``yolo.fit``: libjpeg-turbo scales by 1/2,
1/4 or 1/8 while decoding). ``bench/image_bench.py`` measured the candidates on a
1280x1280 JPEG letterboxed to 640 (``bench/README.md``): Pillow 6.8 ms, OpenCV
``imdecode`` with ``IMREAD_REDUCED_COLOR_2`` 3.8 ms, simplejpeg 4.2 ms (JPEG only).
Pillow reads all three formats and weighs 22 MB against OpenCV's 153 MB, which matters in
an edge image; 3 ms is not worth 130 MB. The size is checked from the header, before any
pixel is decoded, so a pixel-count bomb costs nothing.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from edgepipe import yolo
from edgepipe.config import ImagePreprocess
from edgepipe.yolo import Letterbox

from .errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
MEDIA_TYPES = frozenset(FORMATS.values())
DTYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}


class PreprocessError(ValueError):
    """The preprocess config does not fit the model (a load error naming the field)."""


@dataclass(frozen=True)
class ImageInput:
    """How one model input is filled from an encoded image."""

    config: ImagePreprocess
    field: str  # the request field that carries the image
    width: int
    height: int
    dtype: np.dtype
    max_pixels: int

    @classmethod
    def build(
        cls,
        config: ImagePreprocess,
        field: str,
        shape: tuple[int | str | None, ...],
        dtype: np.dtype,
        max_pixels: int,
        where: str,
    ) -> ImageInput:
        """Check the config against the model input's shape and dtype."""
        if len(shape) != 4:
            raise PreprocessError(
                f"{where}: the model input {field!r} has {len(shape)} dims; an image input "
                "needs 4 (NCHW or NHWC)"
            )
        c, h, w = (1, 2, 3) if config.layout == "NCHW" else (3, 1, 2)
        if isinstance(shape[c], int) and shape[c] != 3:
            raise PreprocessError(
                f"{where}.layout: {config.layout} puts channels at dim {c}, but the model "
                f"input has {shape[c]} there; expected 3"
            )
        width = _size(config.width, shape[w], f"{where}.width")
        height = _size(config.height, shape[h], f"{where}.height")
        want = np.dtype(DTYPES[config.dtype]) if config.dtype else np.dtype(dtype)
        if want != dtype:
            raise PreprocessError(f"{where}.dtype: {want} does not match the model's {dtype}")
        if want.type not in DTYPES.values():
            raise PreprocessError(
                f"{where}: the model input {field!r} is {dtype}; an image input must be "
                "float32, float16 or uint8"
            )
        return cls(config, field, width, height, want, max_pixels)

    def __call__(self, data: bytes | memoryview, row: int) -> tuple[np.ndarray, Letterbox]:
        """One image as the model input ``[1, ...]``, and how to map boxes back."""
        img = self._open(data, row)
        try:
            with img:
                return self._fill(img)
        except (OSError, SyntaxError, ValueError) as exc:
            # Pillow reports truncated and corrupt pixel data as OSError on load.
            raise BadRequest(
                f"row {row}: image field {self.field!r}: cannot decode the {img.format} "
                f"image ({exc}); it is truncated or corrupt",
                self.field,
            ) from None

    def _open(self, data: bytes | memoryview, row: int) -> Image.Image:
        if not len(data):
            raise BadRequest(f"row {row}: image field {self.field!r} is empty", self.field)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data), formats=list(FORMATS))
        except UnidentifiedImageError:
            raise UnsupportedMediaType(
                f"row {row}: image field {self.field!r}: not a JPEG, PNG or WebP image",
                self.field,
            ) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            # Pillow's own guard fires first on the largest; its message has the count.
            count = re.search(r"\((\d+) pixels\)", str(exc))
            raise self._too_many(f"{count[1]} pixels" if count else None, row) from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise BadRequest(
                f"row {row}: image field {self.field!r}: corrupt image header ({exc})",
                self.field,
            ) from None
        w, h = img.size
        if w * h > self.max_pixels or w <= 0 or h <= 0:
            img.close()
            raise self._too_many(f"{w}x{h} pixels", row)
        return img

    def _too_many(self, what: str | None, row: int) -> PayloadTooLarge:
        what = what or "too many pixels"
        return PayloadTooLarge(
            f"row {row}: image field {self.field!r}: {what} is over the limit of "
            f"{self.max_pixels} pixels (EDGEPIPE_ENGINE_MAX_IMAGE_PIXELS)",
            self.field,
        )

    def _fill(self, img: Image.Image) -> tuple[np.ndarray, Letterbox]:
        cfg = self.config
        canvas, frame = yolo.fit(
            img, self.width, self.height, stretch=cfg.resize == "stretch", pad_value=cfg.pad_value
        )
        if cfg.color == "BGR":
            canvas = canvas[..., ::-1]
        if cfg.layout == "NCHW":
            canvas = canvas.transpose(2, 0, 1)
        if self.dtype == np.uint8:
            tensor = np.ascontiguousarray(canvas)
        else:
            tensor = canvas.astype(self.dtype)
            tensor *= self.dtype.type(cfg.scale)
        return tensor[np.newaxis], frame


def _size(configured: int | None, dim: int | str | None, field: str) -> int:
    if isinstance(dim, int):
        if configured is not None and configured != dim:
            raise PreprocessError(f"{field}: {configured} does not match the model's {dim}")
        return dim
    if configured is None:
        raise PreprocessError(f"{field}: the model's input size is dynamic; give it here")
    return configured
