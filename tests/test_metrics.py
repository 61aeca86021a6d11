"""`/metrics` on its own port: every request series read back over HTTP and held to the ledger's
rows, one process and two workers; the ledger's observer counting each row once whatever the
store does; the sampled state of a process; how workers' gauges combine.

Scrapes are parsed with prometheus_client's own parser, as a Prometheus server would read them.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import types
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from buzz.billing.ledger import LedgerRow, LedgerWriter
from buzz.billing.spool import Spool
from buzz.catalogue import Catalogue
from buzz.config import load
from buzz.counters import Counters
from buzz.metrics import Metrics
from buzz.pools.base import CredentialView
from fakes.fake_anthropic import FakeAnthropic, Reply, message_json
from fakes.fake_google import FakeGoogle
from fakes.fake_openai import FakeOpenAI
from support import BuzzProcess, free_port, raw_post, redis_url, wait_until

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "operator-token-for-metrics-tests"
VENDOR_KEYS = {"OPENAI_API_KEY": "sk-openai-metrics", "GEMINI_API_KEY": "gemini-metrics"}
CATALOGUE = Catalogue.default()
MESSAGES = json.dumps(
    {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
).encode()
TOKEN_COLUMNS = {
    "input": "input_tokens",
    "output": "output_tokens",
    "cache_write_5m": "cache_write_5m_tokens",
    "cache_write_1h": "cache_write_1h_tokens",
    "cache_read": "cache_read_tokens",
}

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape(port: int) -> Samples:
    """Every sample on the metrics port, by sample name, then by its labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/plain")
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def series(samples: Samples, name: str, **match: str) -> dict[tuple[str, ...], float]:
    """One sample name's values keyed by the label values (in label-name order), keeping those
    matching `match` (label names not matched are the key)."""
    found = {}
    for labels, value in samples.get(name, {}).items():
        named = dict(labels)
        if all(named.get(k) == v for k, v in match.items()):
            found[tuple(v for k, v in labels if k not in match and k != "le")] = value
    return found


def model_label(model: str | None) -> str:
    return model if model is not None and CATALOGUE.get(model) is not None else "other"


def status_class(status: int) -> str:
    return f"{status // 100}xx"


def assert_matches_ledger(samples: Samples, rows: Sequence[dict[str, Any]]) -> None:
    """Requests, tokens, cost, unpriced rows, durations and first bytes, each exactly the rows'."""
    requests: Counter[tuple[str, ...]] = Counter()
    tokens: Counter[tuple[str, ...]] = Counter()
    cost: Counter[tuple[str, ...]] = Counter()
    unpriced: Counter[tuple[str, ...]] = Counter()
    durations: Counter[tuple[str, ...]] = Counter()
    duration_sums: dict[tuple[str, ...], float] = {}
    first_bytes: Counter[tuple[str, ...]] = Counter()
    upstream: Counter[tuple[str, ...]] = Counter()
    for row in rows:
        provider, model = row["provider"] or "none", model_label(row["model"])
        # Labels in name order: model, provider, status_class, surface.
        requests[(model, provider, status_class(row["status"]), row["surface"])] += 1
        for kind, column in TOKEN_COLUMNS.items():
            tokens[(model, provider, kind)] += row[column]
        if row["cost_nanos"] is None:
            unpriced[(model, provider)] += 1
        else:
            cost[(model, provider)] += row["cost_nanos"]
        durations[(provider, row["surface"])] += 1
        duration_sums[(provider, row["surface"])] = (
            duration_sums.get((provider, row["surface"]), 0.0) + row["latency_ms"] / 1000
        )
        if row["ttfb_ms"] is not None:
            first_bytes[(provider, row["surface"])] += 1
        if row.get("credential") is not None:
            upstream[(row["credential"], provider, status_class(row["status"]))] += 1
    assert series(samples, "buzz_requests_total") == requests
    assert series(samples, "buzz_tokens_total") == tokens
    scraped_cost = series(samples, "buzz_cost_usd_total")
    assert set(scraped_cost) == set(cost)
    for group, nanos in cost.items():
        assert math.isclose(scraped_cost[group], nanos / 1e9, rel_tol=1e-12), group
    assert series(samples, "buzz_unpriced_requests_total") == unpriced
    assert series(samples, "buzz_request_duration_seconds_count") == durations
    for group, total in series(samples, "buzz_request_duration_seconds_sum").items():
        # The store keeps latency_ms to the microsecond: each row may differ by half of one.
        assert abs(total - duration_sums[group]) <= durations[group] * 0.5e-6, group
    assert series(samples, "buzz_time_to_first_byte_seconds_count") == first_bytes
    # Every row lands in the +Inf bucket of its histogram: no observation is lost.
    assert series(samples, "buzz_request_duration_seconds_bucket", le="+Inf") == durations
    if any("credential" in row for row in rows):
        assert series(samples, "buzz_upstream_requests_total") == upstream


class Vendors:
    def __init__(self, anthropic_fake: FakeAnthropic, openai_fake: FakeOpenAI, google_fake: FakeGoogle) -> None:
        self.anthropic, self.openai, self.google = anthropic_fake, openai_fake, google_fake


@pytest.fixture(scope="module")
def vendors(fake_session: FakeAnthropic) -> Iterator[Vendors]:
    with FakeOpenAI() as openai_fake, FakeGoogle() as google_fake:
        yield Vendors(fake_session, openai_fake, google_fake)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, vendors: Vendors) -> Iterator[BuzzProcess]:
    env = {
        **VENDOR_KEYS,
        "BUZZ_OPENAI_BASE_URL": vendors.openai.url + "/v1",
        "BUZZ_GOOGLE_BASE_URL": vendors.google.url,
        "BUZZ_METRICS_PORT": str(free_port()),
        "BUZZ_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    with BuzzProcess(tmp_path_factory.mktemp("metrics") / "data", vendors.anthropic.url, env=env) as process:
        yield process


def metrics_port(process: BuzzProcess) -> int:
    return int(process.env["BUZZ_METRICS_PORT"])


def _cli(process: BuzzProcess, *args: str) -> str:
    done = process.cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_request_series_match_the_ledger_across_surfaces_models_and_refusals(
    gateway: BuzzProcess, vendors: Vendors
) -> None:
    key = gateway.create_key(project="metrics")
    claude = anthropic.Anthropic(api_key=key, base_url=gateway.url, max_retries=0)
    claude.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    with claude.messages.stream(
        model="claude-sonnet-4-6", max_tokens=8, messages=[{"role": "user", "content": "stream"}]
    ) as stream:
        stream.until_done()
    # Routed to Anthropic by its family's pattern, known to no catalogue: `other`, and unpriced.
    claude.messages.create(model="claude-unreleased-9", max_tokens=8, messages=[{"role": "user", "content": "?"}])
    gpt = openai.OpenAI(api_key=key, base_url=gateway.url + "/v1", max_retries=0)
    gpt.chat.completions.create(model="gpt-5.5", messages=[{"role": "user", "content": "hello"}])
    gemini = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=gateway.url))
    gemini.models.generate_content(model="gemini-2.5-pro", contents="hello")
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    # An upstream 4xx, and buzz's own 404 for a model no vendor serves.
    assert raw_post(gateway.url, "/v1/messages", MESSAGES, {**headers, "x-fake-scenario": "error-400"})[0] == 400
    unknown = MESSAGES.replace(b"claude-haiku-4-5", b"nobody-serves-this")
    assert raw_post(gateway.url, "/v1/messages", unknown, headers)[0] == 404
    # A key allowed one request a minute: the second is refused by its rpm limit.
    limited = _cli(gateway, "keys", "create", "--project", "metrics-limited", "--rpm", "1")
    limited_headers = {**headers, "x-api-key": limited}
    assert raw_post(gateway.url, "/v1/messages", MESSAGES, limited_headers)[0] == 200
    assert raw_post(gateway.url, "/v1/messages", MESSAGES, limited_headers)[0] == 429

    ours = gateway.ledger(count=9, where=lambda row: row["project"] in ("metrics", "metrics-limited"))
    assert len(ours) == 9
    rows = gateway.ledger()
    samples = scrape(metrics_port(gateway))  # the rows are in the store: the observer saw them first
    assert_matches_ledger(samples, rows)
    requests = series(samples, "buzz_requests_total")
    assert {surface for (_, _, _, surface) in requests} == {"anthropic", "openai", "gemini"}
    assert {model for (model, _, _, _) in requests} >= {"claude-haiku-4-5", "gpt-5.5", "gemini-2.5-pro", "other"}
    assert {status for (_, _, status, _) in requests} == {"2xx", "4xx"}
    assert ("other", "none", "4xx", "anthropic") in requests  # the 404: no vendor reached
    assert series(samples, "buzz_unpriced_requests_total") == {("other", "anthropic"): 1.0}
    rejections = series(samples, "buzz_limiter_rejections_total")
    assert rejections == {(limit,): 1.0 if limit == "rpm" else 0.0 for (limit,) in rejections}
    assert len(rejections) == 7  # every limit, at zero until it refuses something
    assert series(samples, "buzz_limiter_reserve_seconds_count") == {(): 2.0}  # only the limited key reserves
    assert not any(name.endswith("_created") for name in samples)


def test_process_state_is_sampled(gateway: BuzzProcess, vendors: Vendors) -> None:
    port = metrics_port(gateway)
    key = gateway.create_key(project="metrics-state")
    hold = threading.Event()
    answer = message_json("claude-haiku-4-5", "x", {"input_tokens": 5, "output_tokens": 1})
    vendors.anthropic.enqueue(Reply(chunks=[answer], headers=[("content-type", "application/json")], gates=[hold]))
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    statuses: list[int] = []
    held = threading.Thread(target=lambda: statuses.append(raw_post(gateway.url, "/v1/messages", MESSAGES, headers)[0]))
    held.start()
    try:
        assert wait_until(lambda: series(scrape(port), "buzz_requests_in_flight") == {(): 1.0}, timeout=10)
    finally:
        hold.set()
        held.join(10)
    assert statuses == [200]
    assert wait_until(lambda: series(scrape(port), "buzz_requests_in_flight") == {(): 0.0}, timeout=10)
    # A refused key leaves no row; it is an event, counted as the admin API counts it.
    assert raw_post(gateway.url, "/v1/messages", MESSAGES, {**headers, "x-api-key": "buzz-nope"})[0] == 401

    def counted() -> dict[tuple[str, ...], float]:
        request = urllib.request.Request(
            gateway.url + "/admin/api/counters", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return {(name,): float(count) for name, count in json.loads(response.read()).items()}

    assert counted()[("auth_refused",)] >= 1
    assert wait_until(lambda: series(scrape(port), "buzz_events_total") == counted(), timeout=10)
    rows = len(gateway.ledger())
    assert wait_until(lambda: series(scrape(port), "buzz_ledger_rows_written_total") == {(): float(rows)}, timeout=10)
    samples = scrape(port)
    assert series(samples, "buzz_ledger_backlog_rows") == {(): 0.0}
    assert series(samples, "buzz_ledger_rows_dropped_total") == {(): 0.0}


def test_a_taken_metrics_port_is_a_clear_error_at_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("BUZZ_")}
        env["BUZZ_DATA_DIR"] = str(tmp_path / "data")
        done = subprocess.run(
            [sys.executable, "-m", "buzz", "serve", "--port", "0", "--metrics-port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert f"metrics_port: cannot listen on 127.0.0.1:{port}" in done.stderr


def test_the_setting_comes_from_file_environment_and_flag(tmp_path: Path) -> None:
    assert load(None, env={}).metrics_port == 0
    config = tmp_path / "buzz.toml"
    config.write_text("[server]\nmetrics_port = 9101\n")
    assert load(config, env={}).metrics_port == 9101
    assert load(config, env={"BUZZ_METRICS_PORT": "9102"}).metrics_port == 9102
    assert load(config, env={"BUZZ_METRICS_PORT": "9102"}, flags={"metrics_port": 9103}).metrics_port == 9103


def test_metrics_stay_out_of_the_request_path() -> None:
    """Neither serving nor the request path imports prometheus_client: a supervisor must be able
    to name its directory before the first import."""
    script = (
        "import sys, buzz.cli, buzz.server, buzz.app, buzz.proxy.pipeline\n"
        "print(sorted(m for m in sys.modules if m.startswith(('prometheus_client', 'buzz.metrics'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
    for path in (ROOT / "src" / "buzz" / "proxy").glob("*.py"):
        assert "buzz.metrics" not in path.read_text(), path.name


# --- the ledger's observer ----------------------------------------------------------------


def _row(i: int) -> LedgerRow:
    return LedgerRow(f"req_{i:05d}", 1_790_000_000 + i, "anthropic", 200, "reported", 1.5, key_id="k")


class FlakyStore:
    """A write function that fails while `down` is set (or `failures` times), recording what it took."""

    def __init__(self, failures: int = 0) -> None:
        self.rows: list[LedgerRow] = []
        self.down = threading.Event()
        self.failures = failures
        self.calls = 0

    def write(self, rows: Sequence[LedgerRow]) -> None:
        self.calls += 1
        if self.down.is_set() or self.failures > 0:
            self.failures -= 1
            raise ConnectionError("the store is away")
        self.rows.extend(rows)


class Seen:
    def __init__(self) -> None:
        self.ids: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, rows: Sequence[LedgerRow]) -> None:
        with self.lock:
            self.ids.extend(row.id for row in rows)


def test_rows_are_seen_once_before_the_store_has_them_and_never_again_on_retries(tmp_path: Path) -> None:
    store, seen = FlakyStore(), Seen()
    store.down.set()
    writer = LedgerWriter(store.write, Spool(tmp_path / "spool"), flush_interval=0.001, observer=seen)
    writer.start()
    try:
        for i in range(300):
            writer.submit(_row(i))
        # Seen while the store refuses them: an outage does not hide traffic.
        assert wait_until(lambda: len(seen.ids) == 300, timeout=10)
        calls = store.calls
        assert wait_until(lambda: store.calls >= calls + 2, timeout=10)  # tried again, twice
        assert store.rows == []
        store.down.clear()
        assert wait_until(lambda: writer.written == 300, timeout=10)
        for i in range(300, 350):
            writer.submit(_row(i))
    finally:
        writer.close()
    assert sorted(seen.ids) == [f"req_{i:05d}" for i in range(350)]  # each once
    assert len(store.rows) == 350


class RefusingSpool(Spool):
    """A spool on a disk that takes nothing: every batch goes to the store without it."""

    def append(self, batch: list[LedgerRow]) -> None:
        raise OSError("no space left on device")


def test_rows_the_spool_refuses_are_seen_once_and_counted_when_given_up(tmp_path: Path) -> None:
    store, seen = FlakyStore(failures=1), Seen()
    writer = LedgerWriter(store.write, RefusingSpool(tmp_path / "spool"), flush_interval=0.001, observer=seen)
    writer.start()
    try:
        writer.submit(_row(1))  # outside the event loop: handed over at once
        assert wait_until(lambda: writer.written == 1, timeout=10)  # on its second try
        assert seen.ids == ["req_00001"]
        store.down.set()
        writer.submit(_row(2))
        assert wait_until(lambda: writer.dropped == 1, timeout=30)  # every try failed
    finally:
        writer.close()
    assert seen.ids == ["req_00001", "req_00002"]
    assert [row.id for row in store.rows] == ["req_00001"]


def test_an_observer_that_fails_never_stops_the_ledger(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyStore()

    def broken(rows: Sequence[LedgerRow]) -> None:
        raise ValueError("a bug in the observer")

    writer = LedgerWriter(store.write, Spool(tmp_path / "spool"), flush_interval=0.001, observer=broken)
    writer.start()
    try:
        for i in range(20):
            writer.submit(_row(i))
            assert wait_until(lambda i=i: writer.written == i + 1, timeout=10)
    finally:
        writer.close()
    assert len(store.rows) == 20
    assert [r.message for r in caplog.records if "observer" in r.message] == [
        "ledger: the rows' observer failed (ValueError); the ledger goes on"
    ]


# --- sampled state: credentials, and how workers combine ------------------------------------


def _view(name: str, state: str, in_flight: int, headroom: float | None, cooldowns: dict[str, int]) -> CredentialView:
    return CredentialView(
        provider="anthropic",
        name=name,
        weight=1,
        base_url="http://upstream",
        state=state,  # type: ignore[arg-type]
        cause=None if state == "healthy" else "rate_limited",
        until=None,
        since=None,
        in_flight=in_flight,
        headroom=headroom,
        cooldowns=cooldowns,  # type: ignore[arg-type]
    )


def test_credential_series_follow_the_views(tmp_path: Path) -> None:
    views = [_view("a", "healthy", 2, 0.25, {}), _view("b", "held", 0, None, {"rate_limited": 1})]
    metrics = Metrics(lambda model: False, lambda: views)
    ledger = LedgerWriter(FlakyStore().write, Spool(tmp_path / "spool"))
    counters = Counters()
    counters.add("auth_refused", 3)

    def read() -> Samples:
        samples: Samples = {}
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
            for sample in family.samples:
                samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
        return samples

    metrics.sample(4, ledger, counters)
    first = read()
    assert series(first, "buzz_upstream_credential_state", credential="a") == {
        ("anthropic", "disabled"): 0.0,
        ("anthropic", "healthy"): 1.0,
        ("anthropic", "held"): 0.0,
    }
    assert series(first, "buzz_upstream_credential_state", credential="b", state="held") == {("anthropic",): 1.0}
    assert series(first, "buzz_upstream_credential_in_flight") == {("a", "anthropic"): 2.0, ("b", "anthropic"): 0.0}
    assert series(first, "buzz_upstream_credential_headroom") == {("a", "anthropic"): 0.25}  # b's is unknown
    assert series(first, "buzz_upstream_cooldowns_total", credential="b", cause="rate_limited") == {("anthropic",): 1}
    assert series(first, "buzz_upstream_cooldowns_total", credential="a") == {
        ("auth", "anthropic"): 0.0,
        ("billing", "anthropic"): 0.0,
        ("overloaded", "anthropic"): 0.0,
        ("rate_limited", "anthropic"): 0.0,
        ("unreachable", "anthropic"): 0.0,
    }
    assert series(first, "buzz_requests_in_flight") == {(): 4.0}
    assert series(first, "buzz_events_total") == {("auth_refused",): 3.0}

    # Counts since start are added as what grew; a sample with nothing new adds nothing.
    views[1] = _view("b", "disabled", 1, 0.5, {"rate_limited": 3, "auth": 1})
    counters.add("auth_refused", 2)
    metrics.sample(0, ledger, counters)
    metrics.sample(0, ledger, counters)
    second = read()
    assert series(second, "buzz_upstream_credential_state", credential="b", state="disabled") == {("anthropic",): 1.0}
    assert series(second, "buzz_upstream_credential_state", credential="b", state="held") == {("anthropic",): 0.0}
    assert series(second, "buzz_upstream_credential_headroom") == {("a", "anthropic"): 0.25, ("b", "anthropic"): 0.5}
    cooldowns = series(second, "buzz_upstream_cooldowns_total", credential="b")
    assert (cooldowns[("rate_limited", "anthropic")], cooldowns[("auth", "anthropic")]) == (3.0, 1.0)
    assert series(second, "buzz_events_total") == {("auth_refused",): 5.0}


_WORKERS_SCRIPT = """
import json, os, socket, sys, urllib.request
from pathlib import Path
directory = Path(sys.argv[1])
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)  # before prometheus_client is imported, as `serve` does
from buzz.billing.ledger import LedgerRow, LedgerWriter
from buzz.billing.spool import Spool
from buzz.counters import Counters
from buzz.metrics import Metrics, multiprocess
from buzz.metrics_server import SharedMetrics
from buzz.pools.base import CredentialView

assert multiprocess()
pids = []
for number, (headroom, in_flight) in enumerate([(0.75, 2), (None, 3)]):
    pid = os.fork()
    if pid == 0:  # a worker: its values go to files of its own in the directory
        overloaded = {"overloaded": 2}
        view = CredentialView("openai", "main", 1, "http://u", "healthy", None, None, None, 1, headroom, overloaded)
        metrics = Metrics(lambda model: False, lambda: [view])
        ledger = LedgerWriter(lambda rows: None, Spool(directory.parent / f"spool-{number}"))
        metrics.ledger_rows([LedgerRow(f"r{number}", 1.0, "openai", 200, "reported", 1.0, provider="openai")])
        metrics.sample(in_flight, ledger, Counters())
        os._exit(0)
    os.waitpid(pid, 0)
    pids.append(pid)
shared = SharedMetrics(socket.create_server(("127.0.0.1", 0)), directory)
shared.start()
url = "http://127.0.0.1:%d/metrics" % shared.address[1]
before = urllib.request.urlopen(url).read().decode()
shared.exited(pids[0])
after = urllib.request.urlopen(url).read().decode()
shared.close()
print(json.dumps([before, after, directory.exists()]))
"""


def test_workers_values_combine_as_documented(tmp_path: Path) -> None:
    """Two forked processes writing to one directory, as two workers do: counters add up and
    outlive their process, live gauges follow live processes, unknown headroom never shows."""
    directory = tmp_path / "shared"
    directory.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", _WORKERS_SCRIPT, str(directory)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    before_text, after_text, directory_left = json.loads(done.stdout)
    assert not directory_left  # removed when the supervisor stops

    def parse(text: str) -> Samples:
        samples: Samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
        return samples

    before, after = parse(before_text), parse(after_text)
    assert series(before, "buzz_requests_total") == {("other", "openai", "2xx", "openai"): 2.0}
    assert series(before, "buzz_requests_in_flight") == {(): 5.0}  # summed
    assert series(before, "buzz_upstream_credential_headroom") == {("main", "openai"): 0.75}  # lowest known
    assert series(before, "buzz_upstream_cooldowns_total", cause="overloaded") == {("main", "openai"): 4.0}
    assert series(before, "buzz_upstream_credential_state", state="healthy") == {("main", "openai"): 1.0}
    # The first process is gone: its in-flight and headroom go with it, its counts stay.
    assert series(after, "buzz_requests_in_flight") == {(): 3.0}
    assert series(after, "buzz_upstream_credential_headroom") == {}
    assert series(after, "buzz_requests_total") == {("other", "openai", "2xx", "openai"): 2.0}
    assert series(after, "buzz_upstream_cooldowns_total", cause="overloaded") == {("main", "openai"): 4.0}


# --- several workers ------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return sorted(found)


def _shared_directory(pid: int) -> Path:
    """Where a worker keeps its values: the directory of the files it has mapped."""
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    found = {Path(line.split()[-1]).parent for line in maps if line.endswith(".db") and "buzz-metrics-" in line}
    assert len(found) == 1, found
    return found.pop()


def test_two_workers_are_scraped_from_the_supervisor_as_one(tmp_path: Path, fake_session: FakeAnthropic) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    env = {"BUZZ_WORKERS": "2", "BUZZ_REDIS_URL": redis_url(12), "BUZZ_METRICS_PORT": str(port)}
    buzz = BuzzProcess(data_dir, fake_session.url, env, new_session=True)
    with buzz:
        assert wait_until(lambda: buzz.output().count(b"buzz listening on") == 2, timeout=20)
        assert buzz.process is not None
        workers = _children(buzz.process.pid)
        assert len(workers) == 2
        directory = _shared_directory(workers[0])
        assert directory.is_dir()
        key = buzz.create_key(project="workers")
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01", "content-type": "application/json"}
        sent = 0
        for stopped in workers:  # each worker in turn takes every connection
            os.kill(stopped, signal.SIGSTOP)
            try:
                for _ in range(6):
                    assert raw_post(buzz.url, "/v1/messages", MESSAGES, headers)[0] == 200
                    sent += 1
            finally:
                os.kill(stopped, signal.SIGCONT)
        rows = buzz.ledger(count=sent)
        assert len(rows) == sent
        assert {path.name.split("_")[-1] for path in directory.glob("counter_*.db")} == {f"{w}.db" for w in workers}
        assert_matches_ledger(scrape(port), rows)
        assert wait_until(
            lambda: series(scrape(port), "buzz_ledger_rows_written_total") == {(): float(sent)}, timeout=10
        )

        # A worker killed outright is replaced; what it counted stays in the sum.
        os.kill(workers[0], signal.SIGKILL)
        assert wait_until(lambda: buzz.output().count(b"buzz listening on") == 3, timeout=20)
        for _ in range(4):
            assert raw_post(buzz.url, "/v1/messages", MESSAGES, headers)[0] == 200
        rows = buzz.ledger(count=sent + 4)
        assert len(rows) == sent + 4
        assert_matches_ledger(scrape(port), rows)
        assert wait_until(
            lambda: series(scrape(port), "buzz_ledger_rows_written_total") == {(): float(sent + 4)}, timeout=10
        )
        assert wait_until(lambda: series(scrape(port), "buzz_requests_in_flight") == {(): 0.0}, timeout=10)
        assert not list(directory.glob(f"gauge_live*_{workers[0]}.db"))  # the dead worker's live gauges went
    assert buzz.stop() == 0
    assert not directory.exists()
