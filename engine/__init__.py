"""The edgepipe inference engine: an aiohttp server that runs pipelines of ONNX models."""
