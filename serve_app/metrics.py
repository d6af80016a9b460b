"""The service's metrics, through Ray's metrics API (exported on each node's Prometheus endpoint).

Ray prefixes every name with ``ray_`` on export; docs/metrics.md lists them
and k8s/grafana-dashboard.json charts them. Labels never carry a secret, a
token or a stream id (unbounded cardinality): only the deployment's own tags,
an answer's status/reason/code.
"""

from __future__ import annotations

import collections

from ray.serve.metrics import Counter, Gauge, Histogram

from serve_app.protocol import ErrorAnswer, ResultAnswer

LATENCY_MS = [5, 10, 25, 50, 100, 200, 300, 500, 750, 1000, 2000, 5000, 10000]
BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64]


class IngressMetrics:
    """Counts are kept here and added to Ray's counters on :meth:`flush` (every tick): a Ray metric
    record costs tens of microseconds, and at hundreds of frames/s that was 5% of the ingress."""

    def __init__(self) -> None:
        self._received = 0
        self._uncompared = 0
        self._answered: collections.Counter[str] = collections.Counter()
        self.frames = Counter("ocr_frames_received", description="Frames received at the ingress.")
        self.uncompared_frames = Counter(
            "ocr_uncompared_frames",
            description="Frames taken as changed without a compare: their stream's compares kept finding "
            "a change and cost more than a read (sampler.uncompared_after).",
        )
        self.answers = Counter(
            "ocr_answers",
            description="Frame answers by outcome: ok, skipped (by reason), error (by code).",
            tag_keys=("outcome",),
        )
        self.latency = Histogram(
            "ocr_answer_latency_ms",
            description="From frame received to its answer handed to the socket (ms), by outcome.",
            boundaries=LATENCY_MS,
            tag_keys=("outcome",),
        )
        self.streams = Gauge("ocr_open_streams", description="Open WebSocket streams on this replica.")
        self.pending = Gauge("ocr_ingress_unanswered", description="Frames received and not yet answered.")
        self.shed_share = Gauge(
            "ocr_ingress_shed_share", description="Share of new frames shed at the edge (0-1)."
        )
        self.gc_pause = Histogram(
            "ocr_ingress_gc_pause_ms",
            description="Full garbage collections of the replica: how long each stopped it (ms).",
            boundaries=LATENCY_MS,
        )

    def received(self) -> None:
        self._received += 1

    def uncompared(self) -> None:
        self._uncompared += 1

    def answered(self, answer: ResultAnswer | ErrorAnswer) -> None:
        if isinstance(answer, ErrorAnswer):
            outcome = f"error:{answer.code}"
        else:
            outcome = "ok" if answer.status == "ok" else f"skipped:{answer.reason}"
        self._answered[outcome] += 1
        if isinstance(answer, ResultAnswer) and answer.timing is not None:
            self.latency.observe(answer.timing.total_ms, tags={"outcome": outcome})

    def flush(self) -> None:
        if self._received:
            self.frames.inc(self._received)
            self._received = 0
        if self._uncompared:
            self.uncompared_frames.inc(self._uncompared)
            self._uncompared = 0
        for outcome, n in self._answered.items():
            self.answers.inc(n, tags={"outcome": outcome})
        self._answered.clear()


class SamplerMetrics:
    def __init__(self) -> None:
        self.reads = Counter("ocr_frames_read", description="Frames sent to the model.")
        self.streams = Gauge(
            "ocr_sampler_streams", description="Streams in this replica's fair order (read recently)."
        )
        self.in_flight = Gauge("ocr_reads_in_flight", description="Reads at the model now.")
        self.waiting = Gauge(
            "ocr_admission_queue", description="Streams with a frame waiting for a read slot."
        )
        self.window = Gauge("ocr_admission_window", description="Reads this replica may keep at the model.")

    def update(self, stats: dict[str, float], new_reads: int) -> None:
        if new_reads:
            self.reads.inc(new_reads)
        self.streams.set(stats["streams"])
        self.in_flight.set(stats["reads_in_flight"])
        self.waiting.set(stats["waiting"])
        self.window.set(stats["window"])


class ModelMetrics:
    def __init__(self) -> None:
        self.batch_size = Histogram(
            "ocr_batch_size", description="Frames per model call.", boundaries=BATCH_SIZES
        )
        self.latency = Histogram(
            "ocr_model_latency_ms",
            description="Model time of a batch, decode included (ms).",
            boundaries=LATENCY_MS,
        )
        self.queue = Histogram(
            "ocr_model_queue_ms",
            description="Time a frame waited at the model replica before its batch started (ms).",
            boundaries=LATENCY_MS,
        )
        self.demand = Gauge("ocr_demand", description="Reads wanted now, as reported by the samplers.")
        self.line_reads = Counter(
            "ocr_line_reads", description="Frames read line by line (only the lines that changed)."
        )
