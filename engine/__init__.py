"""The edgepipe inference engine: an aiohttp server that runs pipelines of ONNX models."""

from edgepipe.onnxfile import telemetry_off

# onnxruntime (1.29 and later) collects telemetry on Linux and sends it to Microsoft, unless
# ORT_DISABLE_TELEMETRY=1 is set before it starts. Left on, it keeps a device ID and an event
# store under ~/.cache, and where it cannot write there (a read-only root, as in the cluster)
# it uploads at exit: with no reachable DNS or no way out (a cluster, an air-gapped edge) the
# process then hangs 10 s after it closed its port, on lookups of Microsoft's collector,
# which every rollout and scale-down waits for. The engine opts out; ORT_DISABLE_TELEMETRY
# set in the environment wins.
telemetry_off()
