"""ONNX files as the CLI and publishing meet them: checked the same way, with one plain
message when a file is not an ONNX model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# What a file that is not a model often is, by its first bytes.
_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"RIFF": "a RIFF file (WebP, WAV, ...)",
    b"PK\x03\x04": "a zip archive (a PyTorch .pt checkpoint?)",
    b"%PDF": "a PDF document",
}


class NotAnOnnxModel(ValueError):
    """The file cannot be loaded as an ONNX model."""


def _what(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            return what
    if not head:
        return "an empty file"
    if head.lstrip()[:1] in (b"{", b"[", b"#", b"<") or head.isascii():
        return "a text file"
    return "not a protobuf ONNX model"


def telemetry_off() -> None:
    """``ORT_DISABLE_TELEMETRY=1`` unless the environment sets it, for the onnxruntime this
    process starts later: else it keeps a device ID and event store under ~/.cache/Microsoft,
    or uploads to Microsoft at exit (docs/security.md)."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def runtime() -> Any:
    """The onnxruntime module, its telemetry off (``telemetry_off``)."""
    telemetry_off()
    import onnxruntime

    return onnxruntime


def signature(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(inputs, outputs) of an ONNX model, each ``{name, type, shape}``; a file that is not
    an ONNX model raises NotAnOnnxModel saying what it looks like instead."""
    ort = runtime()

    path = Path(path)
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        detail = str(exc).splitlines()[0][:160]
        raise NotAnOnnxModel(
            f"{path} is not an ONNX model: it looks like {_what(path)} ({detail})"
        ) from None

    def sig(args) -> list[dict[str, Any]]:
        return [
            {
                "name": a.name,
                "type": a.type,
                "shape": [d if isinstance(d, int) else str(d) for d in a.shape],
            }
            for a in args
        ]

    return sig(session.get_inputs()), sig(session.get_outputs())


def check(path: str | Path) -> None:
    """Raise NotAnOnnxModel unless ``path`` loads as an ONNX model."""
    signature(path)
