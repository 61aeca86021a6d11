"""Prometheus series about the gateway (`server.metrics_port`), fed from off the request path.

What a request did (its count, tokens, cost, duration, time to first byte, credential) is read
from its ledger row, in the ledger's writer thread, a batch at a time (`LedgerWriter`'s
observer): the event loop counts nothing per request for it. The limiter's reserve is the one
exception: its latency and refusals exist nowhere else, so `Admission` reports them (a clock
read and a call, for keys with limits only). What only the process knows (requests in flight,
the ledger's backlog, `Counters`, the upstream credentials) is sampled every second on the
event loop, which alone touches those.

With one process, the gateway serves its own registry on the metrics port from a thread
(`buzz.metrics_server`). Under `buzz serve --workers N`, prometheus_client's multiprocess mode
is on (the supervisor set `PROMETHEUS_MULTIPROC_DIR` before anything imported it): every value
a worker sets goes to files in that directory, and the supervisor serves their sum. Gauges say
how workers combine: in-flight counts and backlogs add up over live workers, a credential's
state is the latest any live worker sampled, and its headroom the lowest one knows.

This module is imported only when metrics are on, by `Gateway.startup`; nothing in the request
path imports it. Label values are bounded: surfaces, vendors, models the catalogue knows (any
other id is `other`), status classes, credential names from the configuration, limit, cause and
event names fixed in the code. Never a key, a project or a user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

from buzz.limits.base import LimitName
from buzz.metrics_server import HEADROOM, Exposed, MetricsServer
from buzz.pools.base import CAUSES, CredentialView

if TYPE_CHECKING:
    from buzz.billing.ledger import LedgerRow, LedgerWriter
    from buzz.catalogue import Catalogue
    from buzz.counters import Counters

log = logging.getLogger("buzz.metrics")

SAMPLE_SECONDS = 1.0
OTHER = "other"  # the model label of an id the catalogue does not know
NONE = "none"  # the provider label of a row that reached no vendor (refused before routing)
STATES = ("healthy", "held", "disabled")
TOKEN_TYPES = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
# An LLM call takes from milliseconds (a refusal, count_tokens) to many minutes (a long
# generation; `upstream.read_timeout` is 10 minutes between chunks).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
FIRST_BYTE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
# In process a reserve takes microseconds; through Redis, a round trip and a batch's wait.
RESERVE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
# Model ids remembered, known or not, before unknown ones are looked up every time: a client
# sending random ids must not grow memory.
_MODEL_MEMORY = 4096
_NANOS_PER_USD = 1_000_000_000


_Metric = TypeVar("_Metric", Counter, Histogram)


class _Children(Generic[_Metric]):
    """A metric's children by label values, found with one dict lookup: `labels()` checks,
    converts and locks on every call, which a batch of one row would pay eight times."""

    __slots__ = ("_by", "_metric")

    def __init__(self, metric: _Metric) -> None:
        self._metric: _Metric = metric
        self._by: dict[tuple[str, ...], _Metric] = {}

    def __call__(self, *labels: str) -> _Metric:
        child = self._by.get(labels)
        if child is None:
            child = self._by[labels] = self._metric.labels(*labels)
        return child


def multiprocess() -> bool:
    """Whether prometheus_client keeps values in the supervisor's shared files: it decided when it
    was first imported, from `PROMETHEUS_MULTIPROC_DIR`."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else OTHER


class Metrics:
    """Every series, with the methods that feed them. `ledger_rows` runs in the ledger's writer
    thread, `reserved` and `sample` on the event loop; prometheus_client's values lock for
    themselves, and each method keeps state of its own thread only."""

    def __init__(
        self,
        known_model: Callable[[str], bool],
        views: Callable[[], Sequence[CredentialView]],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._known_model = known_model
        self._views = views
        r = None  # each is served through `Exposed`, registered below
        self._requests = Counter(
            "buzz_requests",
            "Requests, from their ledger rows.",
            ("surface", "provider", "model", "status_class"),
            registry=r,
        )
        self._tokens = Counter(
            "buzz_tokens", "Tokens billed, by type, from the ledger rows.", ("provider", "model", "type"), registry=r
        )
        self._cost = Counter(
            "buzz_cost_usd", "What buzz billed, in USD, from the ledger rows.", ("provider", "model"), registry=r
        )
        self._unpriced = Counter(
            "buzz_unpriced_requests",
            "Requests whose cost is unknown (an unpriced model): not in buzz_cost_usd_total.",
            ("provider", "model"),
            registry=r,
        )
        self._duration = Histogram(
            "buzz_request_duration_seconds",
            "From a request's arrival to its ledger row (the whole answer relayed).",
            ("surface", "provider"),
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self._first_byte = Histogram(
            "buzz_time_to_first_byte_seconds",
            "From a request's arrival to the upstream's first body byte relayed.",
            ("surface", "provider"),
            buckets=FIRST_BYTE_BUCKETS,
            registry=r,
        )
        self._upstream = Counter(
            "buzz_upstream_requests",
            "Requests sent upstream, by the credential they went out with, from the ledger rows.",
            ("provider", "credential", "status_class"),
            registry=r,
        )
        self._in_flight = Gauge(
            "buzz_requests_in_flight", "Proxied requests being served.", registry=r, multiprocess_mode="livesum"
        )
        self._backlog = Gauge(
            "buzz_ledger_backlog_rows",
            "Ledger rows not yet in the store (waiting to be spooled, or in the spool).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self._written = Counter("buzz_ledger_rows_written", "Ledger rows written to the store.", registry=r)
        self._dropped = Counter(
            "buzz_ledger_rows_dropped",
            "Ledger rows given up: neither the spool nor, after retries, the store took them.",
            registry=r,
        )
        self._reserve = Histogram(
            "buzz_limiter_reserve_seconds",
            "Time the limiter took to reserve a request's worst case (admitted or refused).",
            buckets=RESERVE_BUCKETS,
            registry=r,
        )
        self._rejections = Counter(
            "buzz_limiter_rejections", "Requests a limit refused, by the limit.", ("limit",), registry=r
        )
        self._events = Counter(
            "buzz_events", "Events that leave no ledger row (as GET /admin/api/counters).", ("event",), registry=r
        )
        self._state = Gauge(
            "buzz_upstream_credential_state",
            "1 for the credential's state (healthy, held or disabled), 0 for the others.",
            ("provider", "credential", "state"),
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self._credential_in_flight = Gauge(
            "buzz_upstream_credential_in_flight",
            "Requests in flight on the credential.",
            ("provider", "credential"),
            registry=r,
            multiprocess_mode="livesum",
        )
        self._headroom = Gauge(
            HEADROOM,
            "The tightest of the vendor's rate limits as the fraction left (0 to 1), from the last answer; "
            "absent when unknown.",
            ("provider", "credential"),
            registry=r,
            multiprocess_mode="livemin",
        )
        self._cooldowns = Counter(
            "buzz_upstream_cooldowns",
            "Times the credential was taken out of rotation, by cause.",
            ("provider", "credential", "cause"),
            registry=r,
        )
        self.registry.register(
            Exposed(
                self._requests,
                self._tokens,
                self._cost,
                self._unpriced,
                self._duration,
                self._first_byte,
                self._upstream,
                self._in_flight,
                self._backlog,
                self._written,
                self._dropped,
                self._reserve,
                self._rejections,
                self._events,
                self._state,
                self._credential_in_flight,
                self._headroom,
                self._cooldowns,
            )
        )
        for limit in get_args(LimitName):
            self._rejections.labels(limit)  # every limit at 0 from the start, so rates begin at once
        # The writer thread's own: label values by model id, and the children it counts into.
        self._models: dict[str | None, str] = {}
        self._requests_of = _Children(self._requests)
        self._upstream_of = _Children(self._upstream)
        self._tokens_of = _Children(self._tokens)
        self._cost_of = _Children(self._cost)
        self._unpriced_of = _Children(self._unpriced)
        self._duration_of = _Children(self._duration)
        self._first_byte_of = _Children(self._first_byte)
        # The event loop's own: what the last sample saw of counts that only grow.
        self._seen: dict[tuple[str, ...], int] = {}
        self._credentials_seen: set[tuple[str, str]] = set()

    def ledger_rows(self, rows: Sequence[LedgerRow]) -> None:
        """The ledger's observer: counts a batch of rows, summed first so that each series is
        touched once a batch; the histograms take one observation a row."""
        # Plain dicts: a Counter costs ten times as much to make, and most batches are small.
        requests: dict[tuple[str, str, str, str], int] = {}
        upstream: dict[tuple[str, str, str], int] = {}
        unpriced: dict[tuple[str, str], int] = {}
        cost: dict[tuple[str, str], int] = {}
        tokens: dict[tuple[str, str], list[int]] = {}
        for row in rows:
            provider = row.provider or NONE
            model = self._model(row.model)
            surface = row.surface
            status = status_class(row.status)
            labels = (surface, provider, model, status)
            requests[labels] = requests.get(labels, 0) + 1
            if row.credential is not None:
                credential = (provider, row.credential, status)
                upstream[credential] = upstream.get(credential, 0) + 1
            group = (provider, model)
            counts = tokens.get(group)
            if counts is None:
                counts = tokens[group] = [0, 0, 0, 0, 0]
            counts[0] += row.input_tokens
            counts[1] += row.output_tokens
            counts[2] += row.cache_write_5m_tokens
            counts[3] += row.cache_write_1h_tokens
            counts[4] += row.cache_read_tokens
            if row.cost_nanos is None:
                unpriced[group] = unpriced.get(group, 0) + 1
            else:
                cost[group] = cost.get(group, 0) + max(0, row.cost_nanos)
            self._duration_of(surface, provider).observe(row.latency_ms / 1000.0)
            if row.ttfb_ms is not None:
                self._first_byte_of(surface, provider).observe(row.ttfb_ms / 1000.0)
        for request_labels, count in requests.items():
            self._requests_of(*request_labels).inc(count)
        for credential_labels, count in upstream.items():
            self._upstream_of(*credential_labels).inc(count)
        for group, counts in tokens.items():
            for kind, count in zip(TOKEN_TYPES, counts, strict=True):
                child = self._tokens_of(*group, kind)  # the series exists from the first row, at 0
                if count:
                    child.inc(count)
            if group in cost:
                child = self._cost_of(*group)
                if cost[group]:
                    child.inc(cost[group] / _NANOS_PER_USD)
            if group in unpriced:
                self._unpriced_of(*group).inc(unpriced[group])

    def _model(self, model: str | None) -> str:
        label = self._models.get(model)
        if label is None:
            label = model if model is not None and self._known_model(model) else OTHER
            if len(self._models) < _MODEL_MEMORY:
                self._models[model] = label
        return label

    def reserved(self, seconds: float, limit: LimitName | None) -> None:
        """`Admission`'s observer."""
        self._reserve.observe(seconds)
        if limit is not None:
            self._rejections.labels(limit).inc()

    def sample(self, in_flight: int, ledger: LedgerWriter, counters: Counters) -> None:
        """What only this process knows, as it stands; counts that only grow are added as the
        increase since the last sample, so that workers' counts add up."""
        self._in_flight.set(in_flight)
        self._backlog.set(ledger.backlog)
        self._grow(self._written, ("ledger_written",), ledger.written)
        self._grow(self._dropped, ("ledger_dropped",), ledger.dropped)
        for name, count in counters.snapshot().items():
            self._grow(self._events.labels(name), ("event", name), count)
        for view in self._views():
            provider, name = view.provider, view.name
            if (provider, name) not in self._credentials_seen:
                self._credentials_seen.add((provider, name))
                for cause in CAUSES:
                    self._cooldowns.labels(provider, name, cause)  # at 0 until the first
            for state in STATES:
                self._state.labels(provider, name, state).set(1.0 if view.state == state else 0.0)
            self._credential_in_flight.labels(provider, name).set(view.in_flight)
            self._headroom.labels(provider, name).set(math.inf if view.headroom is None else view.headroom)
            for cause, count in view.cooldowns.items():
                self._grow(self._cooldowns.labels(provider, name, cause), ("cooldown", provider, name, cause), count)

    def _grow(self, counter: Counter, key: tuple[str, ...], count: int) -> None:
        seen = self._seen.get(key, 0)
        if count > seen:
            counter.inc(count - seen)
            self._seen[key] = count


class GatewayMetrics:
    """The metrics of one gateway process: the series, the sampling task, and, with one process,
    the server on the metrics port."""

    def __init__(
        self,
        catalogue: Catalogue,
        views: Callable[[], Sequence[CredentialView]],
        host: str,
        port: int,
        listener: socket.socket | None = None,
    ) -> None:
        self.series = Metrics(lambda model: catalogue.get(model) is not None, views)
        self._server: MetricsServer | None = None
        if not multiprocess():  # else the supervisor serves every worker's values
            self._server = MetricsServer(
                listener if listener is not None else _listen(host, port), self.series.registry
            )
        self._sampler: asyncio.Task[None] | None = None
        self._sources: tuple[Callable[[], int], LedgerWriter, Counters] | None = None
        self._sample_failed = False

    def start(self, in_flight: Callable[[], int], ledger: LedgerWriter, counters: Counters) -> None:
        self._sources = (in_flight, ledger, counters)
        self._sampler = asyncio.create_task(self._sample_every(SAMPLE_SECONDS), name="buzz-metrics")
        if self._server is not None:
            self._server.start()

    async def close(self) -> None:
        """After the ledger closed: a last sample counts what this process did since the one
        before (its files outlive it under a supervisor), then the server stops."""
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        self._sample()
        if self._server is not None:
            self._server.close()

    async def _sample_every(self, seconds: float) -> None:
        while True:
            self._sample()
            await asyncio.sleep(seconds)

    def _sample(self) -> None:
        if self._sources is None:
            return
        in_flight, ledger, counters = self._sources
        try:
            self.series.sample(in_flight(), ledger, counters)
        except Exception as exc:
            if not self._sample_failed:  # once: a fault here would otherwise log every second
                self._sample_failed = True
                log.error("metrics: sampling failed (%s); the gateway goes on", type(exc).__name__)


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket of the gateway's own, when no one bound the port for it at start."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)
