"""Prometheus metrics, read from the models' counters at scrape time (one source of truth with the statistics
extension); names follow Triton's (nv_inference_*) so existing dashboards apply."""
from __future__ import annotations


class Metrics:
    def __init__(self, repository):
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(repository))

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _Collector:
    def __init__(self, repository):
        self.repository = repository

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        labels = ["model", "version"]
        families = {
            "success": CounterMetricFamily("nv_inference_request_success", "Successful requests", labels=labels),
            "failure": CounterMetricFamily("nv_inference_request_failure", "Failed requests", labels=labels),
            "rejected": CounterMetricFamily("nv_inference_request_rejected", "Requests refused (full queue, "
                                            "unloading)", labels=labels),
            "cancelled": CounterMetricFamily("nv_inference_request_cancelled", "Requests dropped unrun because "
                                             "the client went away", labels=labels),
            "count": CounterMetricFamily("nv_inference_count", "Inferences (batch rows)", labels=labels),
            "exec": CounterMetricFamily("nv_inference_exec_count", "Engine executions (batches)", labels=labels),
            "queue": CounterMetricFamily("nv_inference_queue_duration_us", "Queue time", labels=labels),
            "compute": CounterMetricFamily("nv_inference_compute_infer_duration_us", "Compute time", labels=labels),
            "pending": GaugeMetricFamily("nv_inference_pending_request_count", "Queued and running requests",
                                        labels=labels),
        }
        for model in self.repository.loaded():
            stats = model.stats.snapshot()
            key = [model.name, model.version]
            families["success"].add_metric(key, stats["success"][0])
            families["failure"].add_metric(key, stats["fail"][0])
            families["rejected"].add_metric(key, stats["rejected"])
            families["cancelled"].add_metric(key, stats["cancelled"])
            families["count"].add_metric(key, stats["inference_count"])
            families["exec"].add_metric(key, stats["execution_count"])
            families["queue"].add_metric(key, stats["queue"][1] / 1000)
            families["compute"].add_metric(key, stats["compute_infer"][1] / 1000)
            families["pending"].add_metric(key, model.scheduler.pending)
        yield from families.values()
