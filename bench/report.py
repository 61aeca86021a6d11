"""The targets buzz is held to, and the tables a run prints."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

HEADLINE_RPS = 2_500  # ~1 KB bodies, concurrency 32, buzz on one core
HEADLINE_BODIES = ("small", "chat")  # /v1/messages and /v1/chat/completions, both ~1 KB
ADDED_P50_MS = {"small": 0.5, "large": 1.0, "chat": 0.5}  # at concurrency 1
_LABEL = {"small": "small", "large": "large", "chat": "chat-completions (~1 KB)"}
ADDED_TTFB_MS = 1.0
# "Flat": what a leak of 50 bytes a request would add over 100,000 requests; allocator noise
# is a few hundred KiB either way.
MEMORY_GROWTH_KIB = 5 * 1024


def _row(rows: list[dict[str, Any]], target: str, body: str, concurrency: int) -> dict[str, Any]:
    for row in rows:
        if (row["target"], row["body"], row["concurrency"]) == (target, body, concurrency):
            return row
    raise KeyError(f"no {target} {body} c={concurrency} measurement")


def added_latency(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out = {}
    for body in ADDED_P50_MS:
        direct, buzz = _row(rows, "direct", body, 1), _row(rows, "buzz", body, 1)
        out[body] = {
            "direct_p50_ms": direct["p50_ms"],
            "buzz_p50_ms": buzz["p50_ms"],
            "added_p50_ms": round(buzz["p50_ms"] - direct["p50_ms"], 4),
            "added_p99_ms": round(buzz["p99_ms"] - direct["p99_ms"], 4),
        }
    return out


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    added = results["added_latency"]
    ttfb = results["ttfb"]["fast"]["added_ttfb_p50_ms"]
    mem = results["memory"]
    out = []
    for body in HEADLINE_BODIES:
        headline = _row(results["throughput"], "buzz", body, 32)
        out.append(
            {
                "name": f"{_LABEL[body]} req/s through buzz, c=32",
                "target": f">= {HEADLINE_RPS:,}",
                "observed": f"{headline['rps']:,.0f}"
                + (f" ({headline['errors']} errors)" if headline["errors"] else ""),
                "met": headline["rps"] >= HEADLINE_RPS and headline["errors"] == 0,
            }
        )
    for body, limit in ADDED_P50_MS.items():
        value = added[body]["added_p50_ms"]
        out.append(
            {
                "name": f"added p50 latency, {_LABEL[body]} body, c=1",
                "target": f"< {limit} ms",
                "observed": f"{value:.3f} ms",
            }
            | {"met": value < limit}
        )
    out.append(
        {"name": "added TTFB p50, stream", "target": f"< {ADDED_TTFB_MS} ms", "observed": f"{ttfb:.3f} ms"}
        | {"met": ttfb < ADDED_TTFB_MS}
    )
    out.append(
        {
            "name": f"RSS flat over {mem['requests']:,} requests",
            "target": f"growth <= {MEMORY_GROWTH_KIB // 1024} MiB",
            "observed": f"{mem['growth_kib'] / 1024:+.1f} MiB",
            "met": mem["growth_kib"] <= MEMORY_GROWTH_KIB and mem["errors"] == 0,
        }
    )
    return out


def _f(value: float, digits: int = 3) -> str:
    return f"{value:,.{digits}f}"


def noise_warnings(rows: list[dict[str, Any]]) -> list[str]:
    """Measurements that something besides the benchmark slowed down (steal, or another process
    on buzz's core); their figures understate buzz."""
    out = []
    for r in rows:
        if "buzz_core_busy_pct" not in r:
            continue  # nothing pinned, nothing to compare
        where = f"{r['target']} {r['body']} c={r['concurrency']}"
        steal = max(r["buzz_core_steal_pct"], r["load_core_steal_pct"])
        if steal > 2:
            out.append(f"{where}: the hypervisor stole up to {steal}% of a core")
        others = r["buzz_core_busy_pct"] - r["buzz_cpu_pct"]
        if others > 5:
            out.append(f"{where}: {others:.0f}% of buzz's core went to something else")
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"  # no figure when nothing was pinned


def show(console: Console, results: dict[str, Any]) -> None:
    rows = results["throughput"]
    table = Table(title="Throughput and latency (non-streaming POST)")
    for column in (
        "path",
        "body",
        "conc",
        "direct req/s",
        "p50 ms",
        "p99 ms",
        "buzz req/s",
        "p50 ms",
        "p99 ms",
        "buzz CPU",
        "load core busy direct / buzz",
        "errors",
    ):
        table.add_column(column, justify="right")
    for direct in (r for r in rows if r["target"] == "direct"):
        buzz = _row(rows, "buzz", direct["body"], direct["concurrency"])
        table.add_row(
            direct.get("path", "/v1/messages"),
            f"{direct['body_bytes'] // 1024} KiB",
            str(direct["concurrency"]),
            _f(direct["rps"], 0),
            _f(direct["p50_ms"]),
            _f(direct["p99_ms"]),
            _f(buzz["rps"], 0),
            _f(buzz["p50_ms"]),
            _f(buzz["p99_ms"]),
            f"{buzz['buzz_cpu_pct']:.0f}%",
            f"{_pct(direct.get('load_core_busy_pct'))} / {_pct(buzz.get('load_core_busy_pct'))}",
            str(direct["errors"] + buzz["errors"]),
        )
    console.print(table)
    for warning in noise_warnings(rows):
        console.print(f"[yellow]warning: {warning}[/]")

    latency = Table(title="Added latency at concurrency 1 (buzz p50 - direct p50)")
    for column in ("body", "direct p50 ms", "buzz p50 ms", "added p50 ms", "added p99 ms"):
        latency.add_column(column, justify="right")
    for body, a in results["added_latency"].items():
        latency.add_row(
            _LABEL[body], _f(a["direct_p50_ms"]), _f(a["buzz_p50_ms"]), _f(a["added_p50_ms"]), _f(a["added_p99_ms"])
        )
    console.print(latency)

    first = Table(title="Streaming: time to first body byte, one request at a time")
    for column in (
        "stream",
        "samples",
        "direct p50 ms",
        "direct p99 ms",
        "buzz p50 ms",
        "buzz p99 ms",
        "added p50 ms",
    ):
        first.add_column(column, justify="right")
    first.add_column("whole stream p50 direct / buzz", justify="right")
    for name, label in (("fast", "default"), ("slow", "slow (100 ms gaps)")):
        s = results["ttfb"][name]
        d, b = s["direct"], s["buzz"]
        first.add_row(
            label,
            str(d["samples"]),
            _f(d["ttfb_p50_ms"]),
            _f(d["ttfb_p99_ms"]),
            _f(b["ttfb_p50_ms"]),
            _f(b["ttfb_p99_ms"]),
            _f(s["added_ttfb_p50_ms"]),
            f"{_f(d['total_p50_ms'], 1)} / {_f(b['total_p50_ms'], 1)} ms",
        )
    console.print(first)

    mem = results["memory"]
    memory = Table(title=f"buzz RSS while sending small requests at c={mem['concurrency']}")
    memory.add_column("requests sent", justify="right")
    memory.add_column("VmRSS MiB", justify="right")
    for sample in mem["samples"]:
        memory.add_row(f"{sample['requests']:,}", _f(sample["rss_kib"] / 1024, 1))
    console.print(memory)

    ledger = results["ledger"]
    console.print(
        f"ledger: {ledger['rows']:,} rows {ledger['rows_by_status']} for "
        f"{ledger['client_responses']:,} responses counted by the clients"
    )
    verdict = Table(title="Targets")
    for column in ("target", "goal", "observed", "met"):
        verdict.add_column(column)
    for t in results["targets"]:
        verdict.add_row(t["name"], t["target"], t["observed"], "[green]yes[/]" if t["met"] else "[red]NO[/]")
    console.print(verdict)
