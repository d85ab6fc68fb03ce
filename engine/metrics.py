"""Prometheus metrics of one engine, in a registry of its own (no process globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Inference latencies span sub-millisecond tabular models to seconds-long image batches.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "edgepipe_requests",
            "Inference requests, by pipeline and HTTP status.",
            ["pipeline", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "edgepipe_errors",
            "Failed inference requests, by pipeline and HTTP status.",
            ["pipeline", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "edgepipe_request_latency_seconds",
            "Inference request latency in the engine, by pipeline.",
            ["pipeline"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        # What an autoscaler's inflight metric reads (prometheus-adapter serves it per pod).
        self.inflight = Gauge(
            "edgepipe_inflight_requests",
            "Inference requests being served now (read to answered), by pipeline.",
            ["pipeline"],
            registry=self.registry,
        )
        self.step_latency = Histogram(
            "edgepipe_step_latency_seconds",
            "Model time of one pipeline step per request.",
            ["pipeline", "step"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "edgepipe_batch_size",
            "Rows per model call of a step with dynamic batching.",
            ["pipeline", "step"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.variants = Counter(
            "edgepipe_variant_requests",
            "Requests per model of a split step (A/B), by pipeline, step and model.",
            ["pipeline", "step", "model"],
            registry=self.registry,
        )
        self.shadows = Counter(
            "edgepipe_shadow_calls",
            "Shadow model calls by outcome: ok, error, timeout or skipped.",
            ["pipeline", "model", "outcome"],
            registry=self.registry,
        )
        self.shadow_latency = Histogram(
            "edgepipe_shadow_latency_seconds",
            "Shadow model latency, from submission to its outputs.",
            ["pipeline", "model"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.check_failures = Counter(
            "edgepipe_validation_failures",
            "Rows where a validation rule did not hold, by pipeline and rule.",
            ["pipeline", "validation"],
            registry=self.registry,
        )
        # The local inference log (edge mode).
        self.log_records = Counter(
            "edgepipe_log_records",
            "Inference records written to the local log.",
            registry=self.registry,
        )
        self.log_dropped = Counter(
            "edgepipe_log_dropped_records",
            "Records dropped from the local log to stay under LOCAL_INFERENCE_STORAGE, by "
            "whether they had been uploaded.",
            ["uploaded"],
            registry=self.registry,
        )
        self.log_uploaded = Counter(
            "edgepipe_log_uploaded_records",
            "Records uploaded to the registry.",
            registry=self.registry,
        )
        self.log_upload_failures = Counter(
            "edgepipe_log_upload_failures",
            "Upload passes that failed (the registry down or failing); segments wait on disk.",
            registry=self.registry,
        )
        # Edge updates (engine/updater.py).
        self.update_total = Counter(
            "edgepipe_update",
            "Edge update attempts by result: applied, waiting, rolled-back, rejected, invalid, "
            "load-failed, smoke-failed, registry-down, download, disk-full.",
            ["result"],
            registry=self.registry,
        )
        self.running_version = Gauge(
            "edgepipe_running_version_info",
            "The pipeline version this engine serves (1 on its label).",
            ["version"],
            registry=self.registry,
        )
        self.log_bytes = Gauge(
            "edgepipe_log_bytes",
            "Disk used by the local inference log.",
            registry=self.registry,
        )
