"""A realistic ledger, written through the real store's `write_ledger`, for bench/ledger_scale.py.

The distribution (seeded, so the same parameters always give the same ledger):

- rows spread over `days` days ending at `end`, quarter hour by quarter hour, with a diurnal
  load pattern (a trough of about a fifth of the peak at 03:00 UTC, the peak at 15:00 UTC),
  weekends at 60% of weekdays, and traffic growing by 30% from the first day to the last;
- 8 projects with skewed traffic (38%, 22%, 14%, 10%, 7%, 5%, 3%, 1%);
- 200 keys, split over the projects (60, 40, 30, 24, 18, 14, 9, 5), Zipf-weighted within each
  project; each key uses 1 to 3 models (70/20/10), each through one surface;
- 15 models over 3 providers (Anthropic 42% of the traffic, OpenAI 40%, Google 18%); one of them,
  an OpenAI fine-tune, has no price, so its rows are unpriced (about 1%);
- 2,000 users, split over the projects like the keys and Zipf-weighted within each; 60% of the
  requests carry a user;
- tags: `feature=<one of 12>` on 80% of the requests, `team=<one of 6>` on 50%;
- 97% answered 200; the rest 429 (1.2%), 400 (0.6%), 529/503 (0.4%), 500 (0.3%), 499 (0.3%), and
  0.2% refused by the gateway with 401 (no key, project, user, model or tags);
- tokens: input log-normal around 1,500 (clipped to 1..180,000), output around 300
  (1..16,000); on Anthropic rows, 70% read from the cache (around 8,000 tokens), a fifth of those
  also write to it for 5 minutes, 3% of them for an hour;
- 0.5% of the answered rows have estimated usage, a fifth of those with a `usage_note`;
- costs from buzz's own price book at each model's base rates.
"""

from __future__ import annotations

import math
import random
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from buzz.billing.ledger import LedgerRow
from buzz.billing.pricing import PriceBook, Rates
from buzz.billing.usage import Usage
from buzz.proxy.auth import hash_secret
from buzz.store.base import BUCKET_SECONDS
from buzz.store.sqlite import SQLiteStore

PROJECTS = (
    ("search", 0.38, 60),
    ("support-bot", 0.22, 40),
    ("internal-tools", 0.14, 30),
    ("data-pipeline", 0.10, 24),
    ("mobile-app", 0.07, 18),
    ("research", 0.05, 14),
    ("marketing", 0.03, 9),
    ("sandbox", 0.01, 5),
)
USERS = 2000
# (provider, model, share of the traffic, surfaces it is reached through with their shares)
MODELS = (
    ("anthropic", "claude-sonnet-4-5", 0.20, (("anthropic", 0.9), ("openai", 0.1))),
    ("anthropic", "claude-haiku-4-5", 0.12, (("anthropic", 0.9), ("openai", 0.1))),
    ("anthropic", "claude-opus-4-5", 0.04, (("anthropic", 1.0),)),
    ("anthropic", "claude-3-5-haiku-20241022", 0.03, (("anthropic", 1.0),)),
    ("anthropic", "claude-sonnet-4-20250514", 0.03, (("anthropic", 1.0),)),
    ("openai", "gpt-5", 0.08, (("openai", 1.0),)),
    ("openai", "gpt-5-mini", 0.12, (("openai", 1.0),)),
    ("openai", "gpt-5-nano", 0.04, (("openai", 1.0),)),
    ("openai", "gpt-4.1", 0.04, (("openai", 1.0),)),
    ("openai", "gpt-4.1-mini", 0.05, (("openai", 1.0),)),
    ("openai", "gpt-4o-mini", 0.06, (("openai", 1.0),)),
    ("openai", "ft:gpt-4.1-mini:acme:support:x1", 0.01, (("openai", 1.0),)),  # no price: unpriced rows
    ("google", "gemini-2.5-pro", 0.04, (("gemini", 0.7), ("openai", 0.3))),
    ("google", "gemini-2.5-flash", 0.10, (("gemini", 0.7), ("openai", 0.3))),
    ("google", "gemini-2.5-flash-lite", 0.04, (("gemini", 0.7), ("openai", 0.3))),
)
FEATURES = (
    "search",
    "chat",
    "summarize",
    "classify",
    "extract",
    "translate",
    "autocomplete",
    "rerank",
    "agent",
    "code-review",
    "email-draft",
    "report",
)
TEAMS = ("platform", "growth", "support", "ml", "mobile", "data")
USER_SHARE, FEATURE_SHARE, TEAM_SHARE = 0.60, 0.80, 0.50
# (status, cumulative share of all rows, error type); everything above the last is a 200.
ERRORS = (
    (401, 0.002, "gateway_authentication_error"),
    (429, 0.014, "rate_limit_error"),
    (400, 0.020, "invalid_request_error"),
    (529, 0.024, "overloaded_error"),
    (500, 0.027, "api_error"),
    (499, 0.030, "client_disconnected"),
)
ESTIMATED_SHARE = 0.005
_UPSTREAM_PREFIX = {"anthropic": "msg_", "openai": "chatcmpl-", "google": None}
_ID_ALPHABET = string.ascii_lowercase + string.digits


@dataclass(frozen=True, slots=True)
class Key:
    id: str
    project: str
    users: tuple[str, ...]  # the project's users
    user_weights: tuple[float, ...]  # cumulative
    # (provider, model, surface, rates or None when unpriced), with cumulative weights
    models: tuple[tuple[str, str, str, Rates | None], ...]
    model_weights: tuple[float, ...]


def _zipf(n: int, s: float = 1.1) -> list[float]:
    return [1 / (i + 1) ** s for i in range(n)]


def _cumulative(weights: list[float]) -> tuple[float, ...]:
    total, out = 0.0, []
    for w in weights:
        total += w
        out.append(total)
    return tuple(out)


def make_keys(rng: random.Random, prices: PriceBook, when: datetime) -> tuple[list[Key], tuple[float, ...]]:
    """The 200 keys with their projects, users and models; and their cumulative traffic weights."""
    keys: list[Key] = []
    weights: list[float] = []
    key_total = sum(n for _, _, n in PROJECTS)
    model_weights = [share for _, _, share, _ in MODELS]
    for project, share, n_keys in PROJECTS:
        n_users = round(USERS * n_keys / key_total)
        users = tuple(f"u-{project}-{i:04d}" for i in range(n_users))
        user_weights = _cumulative(_zipf(n_users, 1.0))
        within = _zipf(n_keys)
        for i in range(n_keys):
            key_id = "".join(rng.choice(_ID_ALPHABET) for _ in range(12))
            picked: list[int] = []
            for _ in range(rng.choice((1, 1, 2, 2, 3))):
                choice = rng.choices(range(len(MODELS)), weights=model_weights)[0]
                if choice not in picked:
                    picked.append(choice)
            models = []
            for index in picked:
                provider, model, _, surfaces = MODELS[index]
                surface = rng.choices([s for s, _ in surfaces], weights=[w for _, w in surfaces])[0]
                price = prices.buzz_price(provider, model, when)
                models.append((provider, model, surface, None if price is None else price.base))
            keys.append(
                Key(key_id, project, users, user_weights, tuple(models), _cumulative([0.7, 0.2, 0.1][: len(models)]))
            )
            weights.append(share * within[i] / sum(within))
    return keys, _cumulative(weights)


def quarter_counts(rows: int, days: int, end: float) -> list[tuple[float, float, int]]:
    """(start, end, rows) per quarter hour of the range, the rows spread by the load pattern."""
    start = end - days * 86400
    slots: list[tuple[float, float, float]] = []
    edge = start
    while edge < end:
        stop = min(end, (edge // BUCKET_SECONDS + 1) * BUCKET_SECONDS)
        moment = datetime.fromtimestamp(edge, UTC)
        hour = moment.hour + moment.minute / 60
        diurnal = 0.6 + 0.4 * math.cos((hour - 15) / 24 * 2 * math.pi)  # 1.0 at 15:00, 0.2 at 03:00
        weekly = 0.6 if moment.weekday() >= 5 else 1.0
        growth = 1.0 + 0.3 * (edge - start) / (end - start)
        slots.append((edge, stop, diurnal * weekly * growth * (stop - edge) / BUCKET_SECONDS))
        edge = stop
    total = sum(w for _, _, w in slots)
    out, running, given = [], 0.0, 0
    for first, last, weight in slots:
        running += weight
        upto = round(rows * running / total)
        out.append((first, last, upto - given))
        given = upto
    return out


class RowMaker:
    """Ledger rows for one quarter hour at a time, drawn from one seeded generator."""

    def __init__(self, rng: random.Random, keys: list[Key], key_weights: tuple[float, ...], version: str) -> None:
        self._rng = rng
        self._keys = keys
        self._key_weights = key_weights
        self._version = version
        self._features = _cumulative(_zipf(len(FEATURES), 0.9))

    def rows(self, first: float, last: float, count: int) -> list[LedgerRow]:
        rng = self._rng
        span = last - first
        times = sorted(first + rng.random() * span for _ in range(count))
        keys = rng.choices(self._keys, cum_weights=self._key_weights, k=count)
        return [self._row(ts, key) for ts, key in zip(times, keys, strict=True)]

    def _row(self, ts: float, key: Key) -> LedgerRow:
        rng = self._rng
        row_id = f"req_{int(ts * 1000):012x}{rng.getrandbits(64):016x}"
        draw = rng.random()
        if draw < ERRORS[0][1]:  # refused at the door: nothing known but the surface
            return LedgerRow(row_id, ts, "anthropic", 401, "none", 0.4, error_type=ERRORS[0][2])
        provider, model, surface, rates = rng.choices(key.models, cum_weights=key.model_weights)[0]
        user = rng.choices(key.users, cum_weights=key.user_weights)[0] if rng.random() < USER_SHARE else None
        tags: tuple[str, ...] = ()
        if rng.random() < FEATURE_SHARE:
            tags = (f"feature={rng.choices(FEATURES, cum_weights=self._features)[0]}",)
        if rng.random() < TEAM_SHARE:
            tags = (*tags, f"team={TEAMS[rng.getrandbits(16) % len(TEAMS)]}")
        for status, upto, error_type in ERRORS[1:]:
            if draw < upto:
                if status == 529 and provider != "anthropic":
                    status = 503
                latency = rng.lognormvariate(math.log(300), 1.0)
                return LedgerRow(
                    row_id, ts, surface, status, "none", round(latency, 3), key.id, key.project, user, tags,
                    provider, model, error_type, cost_nanos=0, list_cost_nanos=0,
                )  # fmt: skip
        usage = Usage(
            input_tokens=min(180_000, max(1, int(rng.lognormvariate(7.3, 1.2)))),  # median ~1,500
            output_tokens=min(16_000, max(1, int(rng.lognormvariate(5.7, 1.0)))),  # median ~300
        )
        if provider == "anthropic" and rng.random() < 0.7:
            usage.cache_read_tokens = int(rng.lognormvariate(9.0, 0.8))  # median ~8,000
            cache_draw = rng.random()
            if cache_draw < 0.2:
                usage.cache_write_5m_tokens = int(rng.lognormvariate(7.6, 0.8))
            elif cache_draw < 0.23:
                usage.cache_write_1h_tokens = int(rng.lognormvariate(7.6, 0.8))
        source, note = "reported", None
        if rng.random() < ESTIMATED_SHARE:
            source = "estimated"
            note = "body_over_cap" if rng.random() < 0.2 else None
        cost = None if rates is None else rates.nanos_for(usage)
        ttfb = rng.lognormvariate(math.log(450), 0.5)
        latency = ttfb + usage.output_tokens * rng.uniform(8, 25)
        prefix = _UPSTREAM_PREFIX[provider]
        upstream = None if prefix is None else f"{prefix}{rng.getrandbits(96):024x}"
        return LedgerRow(
            row_id, ts, surface, 200, source, round(latency, 3), key.id, key.project, user, tags, provider, model,
            None, usage.input_tokens, usage.output_tokens, usage.cache_write_5m_tokens, usage.cache_write_1h_tokens,
            usage.cache_read_tokens, cost, cost, self._version, round(ttfb, 3), upstream, note,
        )  # fmt: skip


@dataclass
class Generated:
    rows: int
    seconds: float
    write_seconds: float  # inside write_ledger: the inserts and the rollups' upkeep


def generate(
    path: Path,
    rows: int,
    days: int,
    end: float,
    seed: int,
    batch: int = 10_000,
    progress: Callable[[int, float], None] | None = None,
) -> Generated:
    """Write the ledger into a new database at `path`, with its projects and keys."""
    rng = random.Random(seed)
    prices = PriceBook()
    keys, key_weights = make_keys(rng, prices, datetime.fromtimestamp(end, UTC))
    maker = RowMaker(rng, keys, key_weights, prices.version)
    store = SQLiteStore(path)
    began = time.monotonic()
    written, write_seconds = 0, 0.0
    try:
        for project, _, _ in PROJECTS:
            store.save_project(project, {}, create=True)
        for key in keys:
            store.create_key(key.id, key.project, f"{key.project} key", hash_secret(f"secret-{key.id}"))
        for chunk in batches(maker, quarter_counts(rows, days, end), batch):
            started = time.monotonic()
            store.write_ledger(chunk)
            write_seconds += time.monotonic() - started
            written += len(chunk)
            if progress is not None:
                progress(written, time.monotonic() - began)
    finally:
        store.close()
    return Generated(written, time.monotonic() - began, write_seconds)


def batches(maker: RowMaker, quarters: list[tuple[float, float, int]], size: int) -> Iterator[list[LedgerRow]]:
    pending: list[LedgerRow] = []
    for first, last, count in quarters:
        if count:
            pending.extend(maker.rows(first, last, count))
        if len(pending) >= size:
            yield pending
            pending = []
    if pending:
        yield pending
