"""The targets buzz is held to, and the tables a run prints."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

HEADLINE_RPS = 2_500  # ~1 KB bodies, concurrency 32, buzz on one core; also with limits on, in process
HEADLINE_BODIES = ("small", "chat")  # /v1/messages and /v1/chat/completions, both ~1 KB
ADDED_P50_MS = {"small": 0.5, "large": 1.0, "chat": 0.5}  # at concurrency 1
_LABEL = {"small": "small", "large": "large", "chat": "chat-completions (~1 KB)"}
ADDED_TTFB_MS = 1.0
# The small body with limits on: target name in the rows -> limiter. Only the in-process one is
# held to the targets; the Redis figures are reported without one.
LIMITERS = {"buzz-limits-memory": "memory", "buzz-limits-redis": "redis"}
_LIMITER_LABEL = {"memory": "in-process limiter", "redis": "Redis limiter"}
# "Flat": what a leak of 50 bytes a request would add over 100,000 requests; allocator noise
# is a few hundred KiB either way.
MEMORY_GROWTH_KIB = 5 * 1024


def _row(rows: list[dict[str, Any]], target: str, body: str, concurrency: int, phase: str = "main") -> dict[str, Any]:
    for row in rows:
        if (row.get("phase", "main"), row["target"], row["body"], row["concurrency"]) == (
            phase,
            target,
            body,
            concurrency,
        ):
            return row
    raise KeyError(f"no {target} {body} c={concurrency} measurement ({phase})")


def limits_latency(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per limiter measured: added latency at c=1 against the direct run just before it, and the
    req/s at every concurrency, next to buzz without limits where that was measured alongside."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        limiter = LIMITERS.get(row["target"])
        if limiter is None:
            continue
        phase, concurrency = row["phase"], row["concurrency"]
        direct = _row(rows, "direct", row["body"], concurrency, phase)
        entry = out.setdefault(limiter, {"body": row["body"], "points": {}})
        point: dict[str, Any] = {
            "direct_rps": direct["rps"],
            "direct_p50_ms": direct["p50_ms"],
            "rps": row["rps"],
            "p50_ms": row["p50_ms"],
            "p99_ms": row["p99_ms"],
            "errors": row["errors"],
            "added_p50_ms": round(row["p50_ms"] - direct["p50_ms"], 4),
            "added_p99_ms": round(row["p99_ms"] - direct["p99_ms"], 4),
            "buzz_cpu_us_per_request": round(row["buzz_cpu_pct"] * 1e4 / row["rps"], 1) if row["rps"] else None,
        }
        try:
            plain = _row(rows, "buzz", row["body"], concurrency, phase)
        except KeyError:
            plain = _row(rows, "buzz", row["body"], concurrency)  # measured in the main phase
        point["no_limits_rps"], point["no_limits_p50_ms"] = plain["rps"], plain["p50_ms"]
        point["no_limits_same_phase"] = plain["phase"] == phase if "phase" in plain else phase == "main"
        if plain["rps"]:
            point["no_limits_buzz_cpu_us_per_request"] = round(plain["buzz_cpu_pct"] * 1e4 / plain["rps"], 1)
        entry["points"][str(concurrency)] = point
    return out


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
    memory = results.get("limits_latency", {}).get("memory")
    if memory is not None:
        headline, single = memory["points"]["32"], memory["points"]["1"]
        out.append(
            {
                "name": "small req/s through buzz, c=32, limits on (in-process limiter)",
                "target": f">= {HEADLINE_RPS:,}",
                "observed": f"{headline['rps']:,.0f}"
                + (f" ({headline['errors']} errors)" if headline["errors"] else ""),
                "met": headline["rps"] >= HEADLINE_RPS and headline["errors"] == 0,
            }
        )
        limit = ADDED_P50_MS["small"]
        out.append(
            {
                "name": "added p50 latency, small body, c=1, limits on (in-process limiter)",
                "target": f"< {limit} ms",
                "observed": f"{single['added_p50_ms']:.3f} ms",
                "met": single["added_p50_ms"] < limit,
            }
        )
    for limiter, check in results.get("limits", {}).items():
        if "skipped" in check:
            continue
        out.append(
            {
                "name": f"limits on ({_LIMITER_LABEL[limiter]}): none rejected; balance drop = ledger cost",
                "target": "0 rejected; equal",
                "observed": f"{check['rejected']} rejected, {check['client_errors']} client errors; "
                f"drop {check['balance_drop_nanos']:,} n$ vs ledger {check['ledger_cost_nanos']:,} n$",
                "met": check["rejected"] == 0 and check["client_errors"] == 0 and check["balance_matches_ledger"],
            }
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
            redis = f" (redis-server used {r['redis_cpu_pct']:.0f}% of a core)" if "redis_cpu_pct" in r else ""
            out.append(f"{where}: {others:.0f}% of buzz's core went to something else{redis}")
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
    for direct in (r for r in rows if r["target"] == "direct" and r.get("phase", "main") == "main"):
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
    show_limits(console, results)

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


def _redis_cores(row: dict[str, Any]) -> str:
    by_core: dict[str, int] = row.get("redis_running_samples_by_core", {})
    seen = sum(by_core.values())
    if not seen:
        return "-"
    return " / ".join(f"core {core} {100 * n / seen:.0f}%" for core, n in sorted(by_core.items()))


def show_limits(console: Console, results: dict[str, Any]) -> None:
    rows = results["throughput"]
    table = Table(title="Limits on: small /v1/messages body, a key and a prepaid project with every limit set")
    for column in (
        "limiter",
        "conc",
        "direct req/s",
        "direct p50",
        "no limits req/s",
        "p50",
        "limits req/s",
        "p50 ms",
        "p99 ms",
        "added p50",
        "buzz CPU",
        "core 0 other",
        "redis-server CPU",
        "redis seen on",
        "errors",
    ):
        table.add_column(column, justify="right")
    for limiter, entry in results.get("limits_latency", {}).items():
        for concurrency, p in entry["points"].items():
            target = next(t for t, name in LIMITERS.items() if name == limiter)
            row = _row(rows, target, entry["body"], int(concurrency), "redis" if limiter == "redis" else "main")
            redis_cpu = f"{row['redis_cpu_pct']:.0f}%" if "redis_cpu_pct" in row else "-"
            other = f"{row['buzz_core_busy_pct'] - row['buzz_cpu_pct']:.0f}%" if "buzz_core_busy_pct" in row else "-"
            table.add_row(
                _LIMITER_LABEL[limiter],
                concurrency,
                _f(p["direct_rps"], 0),
                _f(p["direct_p50_ms"]),
                _f(p["no_limits_rps"], 0) + ("" if p["no_limits_same_phase"] else "*"),
                _f(p["no_limits_p50_ms"]),
                _f(p["rps"], 0),
                _f(p["p50_ms"]),
                _f(p["p99_ms"]),
                _f(p["added_p50_ms"]),
                f"{row['buzz_cpu_pct']:.0f}%",
                other,
                redis_cpu,
                _redis_cores(row),
                str(p["errors"]),
            )
    console.print(table)
    console.print("  * buzz without limits as measured in the main phase, not right before")
    for limiter, check in results.get("limits", {}).items():
        if "skipped" in check:
            console.print(f"  {_LIMITER_LABEL[limiter]}: skipped ({check['skipped']})")
            continue
        console.print(
            f"  {_LIMITER_LABEL[limiter]}: ledger {check['ledger_rows_by_status']} for "
            f"{check['client_responses']:,} responses counted by the clients; balance "
            f"{check['balance_start_nanos']:,} -> {check['balance_end_nanos']:,} n$, drop "
            f"{check['balance_drop_nanos']:,} n$, ledger cost {check['ledger_cost_nanos']:,} n$ "
            f"({'equal' if check['balance_matches_ledger'] else 'NOT equal'})"
        )
