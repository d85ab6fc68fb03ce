"""``edgepipe infer``: an image or an input file sent to a pipeline, the answer printed."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .common import emit, output_option


def engine_target(target: str, engine: str) -> tuple[str, str | None]:
    """(engine base URL, pipeline name or None) from a pipeline name or an engine URL."""
    if target.startswith(("http://", "https://")):
        base, sep, name = target.partition("/pipelines/")
        return base.rstrip("/"), (name.strip("/") or None) if sep else None
    return engine.rstrip("/"), target


@click.command("infer")
@click.argument("target", metavar="PIPELINE_OR_URL")
@click.option(
    "--engine",
    default="http://localhost:8080",
    show_default=True,
    help="Engine URL when PIPELINE_OR_URL is a name (after kubectl port-forward).",
)
@click.option(
    "--image",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An image: sent as it is to a pipeline with an image preprocess, else "
    "letterboxed to 640x640 here and sent as the first input.",
)
@click.option(
    "--input",
    "input_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="pandas-records JSON (.json) or Arrow IPC (.arrow).",
)
@click.option(
    "--draw",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --image: save it with the detected boxes and labels.",
)
@click.option(
    "--confidence",
    type=float,
    default=0.5,
    show_default=True,
    help="Lowest score a box is kept with, when the CLI decodes raw YOLOv8 output.",
)
@click.option(
    "--iou",
    type=float,
    default=0.25,
    show_default=True,
    help="Overlap (IoU) above which the lower-scored of two boxes is dropped (NMS), when "
    "the CLI decodes raw YOLOv8 output.",
)
@click.option(
    "--token",
    envvar="EDGEPIPE_TOKEN",
    help="Bearer token for an engine that asks for one (EDGEPIPE_ENGINE_API_TOKEN); "
    "prefer the env var, which other users cannot read in the process list "
    "[env EDGEPIPE_TOKEN].",
)
@click.option(
    "--cacert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM file with the CA that signed an https:// engine's certificate "
    "(default: the system's CAs).",
)
@output_option
def infer_cmd(
    target, engine, image, input_file, draw, confidence, iou, token, cacert, output
) -> None:
    """Send an image or an input file to a pipeline and print the results."""
    from edgepipe.client import EngineClient

    if bool(image) == bool(input_file):
        raise click.UsageError("give --image FILE or --input FILE (one of them)")
    if draw and not image:
        raise click.UsageError("--draw needs --image")
    base, name = engine_target(target, engine)
    client = EngineClient(base, name, token=token, cacert=cacert)
    if image:
        _infer_image(client, image, draw, confidence, iou, output)
        return
    # Whatever the input file's format, the answer comes back as records and prints alike.
    result = _infer_file(client, input_file)
    boxes = _detections(client, result)
    if boxes is not None:
        _print_detections(boxes, output)
        return
    emit(result, output, records_text)


def _infer_file(client, input_file: Path) -> list[dict]:
    """Send an Arrow IPC file (.arrow) or pandas-records JSON; the answer's records."""
    if input_file.suffix == ".arrow":
        import pyarrow as pa

        try:
            with pa.memory_map(str(input_file)) as src:
                table = pa.ipc.open_file(src).read_all()
        except pa.ArrowInvalid as exc:
            raise click.BadParameter(
                f"{input_file} is not an Arrow IPC file ({exc})", param_hint="--input"
            ) from None
        return client.infer_arrow_records(table)
    try:
        records = json.loads(input_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise click.BadParameter(
            f"{input_file} is not pandas-records JSON ({exc}); give a .json file of row "
            "objects, or an Arrow IPC file ending in .arrow",
            param_hint="--input",
        ) from None
    return client.infer_records(None, records)


def records_text(records: list[dict]) -> str:
    lines = []
    for i, rec in enumerate(records):
        dims = ", ".join(f"{k}{v['dim']}" for o in rec["outputs"] for k, v in o.items())
        ms = " + ".join(f"{e / 1e6:.1f}" for e in rec["elapsed"])
        lines.append(f"row {i}: {rec['pipeline_name']} / {rec['model_name']}: {dims} ({ms} ms)")
    return "\n".join(lines)


def _infer_image(
    client, image: Path, draw: Path | None, confidence: float, iou: float, output: str
) -> None:
    from edgepipe import yolo

    try:
        pixels = yolo.load_image(image)
    except OSError as exc:
        raise click.BadParameter(f"{image} is not an image: {exc}", param_hint="--image") from None
    if client.describe()["steps"][0].get("preprocess"):
        # The engine decodes and letterboxes; boxes come back in the image's pixels.
        from edgepipe.client.engine import encoded_image

        result, transform = client.infer_image(None, encoded_image(image, pixels)), None
    else:
        tensor, transform = yolo.letterbox(pixels)
        result = client.infer_tensor(None, None, tensor)
    classes = _classes(client)
    out = result.outputs[0]
    if out.ndim == 2 and out.shape[1] == 6:  # the engine already decoded (postprocess)
        dets = yolo.from_rows(out, transform, classes)
    elif out.ndim == 3 and out.shape[0] == 1 and out.shape[1] >= 5:
        dets = yolo.decode(
            out, transform, confidence_thres=confidence, iou_thres=iou, classes=classes
        )
    else:
        emit(records_text([result.record]), output, lambda t: t)
        return
    _print_detections(dets, output)
    if draw:
        draw.parent.mkdir(parents=True, exist_ok=True)
        yolo.draw(pixels, dets, draw)
        click.echo(f"annotated image: {draw}", err=True)


def _classes(client) -> list[str]:
    """The class names the pipeline's last step knows (from its config or its model)."""
    return client.describe()["steps"][-1].get("classes") or []


def _detections(client, records: list[dict]):
    """The boxes of a pipeline that ends with the YOLO post-step, else None."""
    from edgepipe import yolo
    from edgepipe.client.engine import outputs_of

    last = client.describe()["steps"][-1]
    if [o["name"] for o in last["outputs"]] != ["detections"]:
        return None
    classes = last.get("classes") or []
    return [d for rec in records for d in yolo.from_rows(outputs_of(rec)[0], None, classes)]


def _print_detections(dets, output: str) -> None:
    rows = [d.to_dict() for d in dets]
    emit(
        rows,
        output,
        lambda rs: (
            "\n".join(f"{r['label']:<8} score {r['score']:.3f}  box {r['box']}" for r in rs)
            or "no detections"
        ),
    )
