"""Open Inference Protocol v2 over gRPC: messages, the tensor codec and the service."""
