"""Prometheus text exposition (format 0.0.4) of the server's counters, gauges and histograms.

Small on purpose: a few metric kinds, thread-safe, no dependency. The scheduler thread and the
encoder workers update them; ``GET /metrics`` renders them.
"""

from __future__ import annotations

import bisect
import math
import threading

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _fmt(x: float) -> str:
    if x == math.inf:
        return "+Inf"
    return f"{x:.6g}" if isinstance(x, float) else str(x)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{str(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


class Counter:
    kind = "counter"

    def __init__(self, name: str, doc: str):
        self.name, self.doc = name, doc
        self.value = 0
        self._lock = threading.Lock()

    def inc(self, n: float = 1) -> None:
        with self._lock:
            self.value += n

    def render(self) -> list[str]:
        return [f"{self.name} {_fmt(self.value)}"]


class Gauge:
    """A value, or a function read at render time."""

    kind = "gauge"

    def __init__(self, name: str, doc: str, read=None):
        self.name, self.doc, self.read = name, doc, read
        self.value = 0.0

    def set(self, v: float) -> None:
        self.value = v

    def render(self) -> list[str]:
        v = self.read() if self.read is not None else self.value
        if isinstance(v, dict):           # {labels tuple: value}: one series each
            return [f"{self.name}{_labels(dict(k))} {_fmt(x)}" for k, x in v.items()]
        return [f"{self.name} {_fmt(v)}"]


class Histogram:
    kind = "histogram"

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...]):
        self.name, self.doc = name, doc
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)     # the last: above every bound
        self.sum = 0.0
        self.count = 0
        self._lock = threading.Lock()

    def observe(self, x: float, n: int = 1) -> None:
        i = bisect.bisect_left(self.bounds, x)
        with self._lock:
            self.counts[i] += n
            self.sum += x * n
            self.count += n

    def quantile(self, q: float) -> float:
        """An upper bound of the q-quantile (the bucket's bound it falls in)."""
        with self._lock:
            total, counts = self.count, list(self.counts)
        if total == 0:
            return math.nan
        seen = 0
        for bound, c in zip((*self.bounds, math.inf), counts):
            seen += c
            if seen >= q * total:
                return bound
        return math.inf

    def render(self) -> list[str]:
        with self._lock:
            counts, total, s = list(self.counts), self.count, self.sum
        out, seen = [], 0
        for bound, c in zip((*self.bounds, math.inf), counts):
            seen += c
            out.append(f'{self.name}_bucket{{le="{_fmt(float(bound))}"}} {seen}')
        out += [f"{self.name}_sum {_fmt(float(s))}", f"{self.name}_count {total}"]
        return out


class Registry:
    def __init__(self):
        self.metrics: list = []

    def add(self, metric):
        self.metrics.append(metric)
        return metric

    def counter(self, name: str, doc: str) -> Counter:
        return self.add(Counter(name, doc))

    def gauge(self, name: str, doc: str, read=None) -> Gauge:
        return self.add(Gauge(name, doc, read))

    def histogram(self, name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
        return self.add(Histogram(name, doc, buckets))

    def render(self) -> str:
        lines = []
        for m in self.metrics:
            lines += [f"# HELP {m.name} {m.doc}", f"# TYPE {m.name} {m.kind}", *m.render()]
        return "\n".join(lines) + "\n"
