"""``/metrics`` in Prometheus format: vLLM's metric names where one exists, ``optimum_npu:`` series for the
simulated NPU.

Gauges and counters are read from the scheduler when scraped; latency histograms are observed by the
engine thread when a request finishes: ``vllm:*`` ones on the host's wall clock (what the simulation
took), ``optimum_npu:simulated_*`` ones on the simulated clock (what the NPU would take).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from optimum_npu.runtime import Request
from optimum_npu.serving.engine_core import EngineCore

#: Histogram buckets (seconds): wall-clock ones as vLLM's, simulated ones reaching down to microseconds
#: (a tiny model's step takes microseconds on the simulated device).
WALL_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0)
SIM_BUCKETS = (1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2,
               0.5, 1.0, 2.0, 5.0, 10.0)


class _SchedulerCollector:
    """Reads the scheduler's state and counters at scrape time."""

    def __init__(self, core: EngineCore, model_name: str):
        self.core = core
        self.labels = {"model_name": model_name}

    def _family(self, kind, name: str, doc: str, value: float, **extra):
        labels = {**self.labels, **extra}
        family = kind(name, doc, labels=list(labels))
        family.add_metric(list(labels.values()), value)
        return family

    def collect(self):
        scheduler, stats = self.core.scheduler, self.core.scheduler.stats
        gauge, counter = GaugeMetricFamily, CounterMetricFamily
        yield self._family(gauge, "vllm:num_requests_running", "Sequences admitted (prefilling or decoding).",
                           len(scheduler.running))
        yield self._family(gauge, "vllm:num_requests_waiting", "Sequences waiting for admission.", len(scheduler.waiting))
        yield self._family(gauge, "vllm:kv_cache_usage_perc", "Share of KV blocks in use (1 = full).",
                           scheduler.kv_cache_usage)
        yield self._family(counter, "vllm:num_preemptions", "Sequences preempted (recomputed later).", stats.preemptions)
        yield self._family(counter, "vllm:prompt_tokens", "Prompt tokens received.", stats.prompt_tokens)
        yield self._family(counter, "vllm:generation_tokens", "Tokens generated.", stats.generation_tokens)
        yield self._family(counter, "vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache.",
                           stats.prefix_queries)
        yield self._family(counter, "vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache.",
                           stats.prefix_hits)
        yield self._family(gauge, "optimum_npu:simulated_clock_seconds", "The scheduler's simulated clock.",
                           scheduler.clock_s)
        yield self._family(counter, "optimum_npu:simulated_busy_seconds", "Simulated NPU time spent running graphs.",
                           stats.busy_s)
        yield self._family(gauge, "optimum_npu:decode_padding_waste_ratio",
                           "Share of decode-bucket rows that were padding.", stats.padding_waste)
        yield self._family(counter, "optimum_npu:decode_padded_rows", "Decode-bucket rows run as padding.",
                           stats.padded_rows)
        steps = CounterMetricFamily("optimum_npu:bucket_steps", "Graph calls per compiled bucket.",
                                    labels=[*self.labels, "graph"])
        for graph, count in sorted(dict(stats.buckets).items()):   # a copy: the engine thread adds graphs
            steps.add_metric([*self.labels.values(), graph], count)
        yield steps
        memory = GaugeMetricFamily("optimum_npu:device_memory_bytes", "Simulated device memory held by the model.",
                                   labels=[*self.labels, "category"])
        for category, nbytes in self.core.model._runtime.memory.items():
            memory.add_metric([*self.labels.values(), category], nbytes)
        yield memory


class ServingMetrics:
    """The server's Prometheus registry (its own, so several servers in one process do not clash).

    Args:
        core: the engine core whose scheduler is reported (its finished requests are observed).
        model_name: the ``model_name`` label.
    """

    def __init__(self, core: EngineCore, model_name: str):
        self.registry = CollectorRegistry()
        self.registry.register(_SchedulerCollector(core, model_name))
        self.model_name = model_name

        def histogram(name: str, doc: str, buckets) -> Histogram:
            return Histogram(name, doc, ["model_name"], registry=self.registry, buckets=buckets).labels(model_name)

        self.ttft = histogram("vllm:time_to_first_token_seconds", "Wall-clock time to the first token.", WALL_BUCKETS)
        self.itl = histogram("vllm:inter_token_latency_seconds", "Wall-clock time between tokens.", WALL_BUCKETS)
        self.e2e = histogram("vllm:e2e_request_latency_seconds", "Wall-clock request latency.", WALL_BUCKETS)
        self.sim_ttft = histogram("optimum_npu:simulated_time_to_first_token_seconds",
                                  "Simulated NPU time to the first token (queueing included).", SIM_BUCKETS)
        self.sim_itl = histogram("optimum_npu:simulated_inter_token_latency_seconds",
                                 "Simulated NPU time between tokens.", SIM_BUCKETS)
        self.sim_e2e = histogram("optimum_npu:simulated_e2e_request_latency_seconds",
                                 "Simulated NPU request latency.", SIM_BUCKETS)
        core.finish_hooks.append(self.observe)

    def observe(self, request: Request) -> None:
        """Records a finished request's latencies (called on the engine thread)."""
        wall = request.wall_token_times
        if wall:
            self.ttft.observe(wall[0] - request.wall_arrival)
            self.e2e.observe(wall[-1] - request.wall_arrival)
        for earlier, later in zip(wall, wall[1:]):
            self.itl.observe(later - earlier)
        if request.ttft_s is not None:
            self.sim_ttft.observe(request.ttft_s)
        for gap in request.itl_s:
            self.sim_itl.observe(gap)
        if request.e2e_s is not None:
            self.sim_e2e.observe(request.e2e_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
