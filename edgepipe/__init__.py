"""edgepipe: pipelines of ONNX models on Kubernetes and at the edge."""

__version__ = "0.1.0"
