"""The RESULTS.md report of ``python -m bench``: versions, floors, targets, tables, profiles."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import math
import os
import platform
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ._procs import which
from .profiles import profile_md
from .report import Spread, Table, Target, fmt_ms, ratio, spread
from .running import HELD, MAX_GROUPS, PEER, RAW_CLIENTS, Bench
from .scenarios import Results

__all__ = ["build_report"]


def _versions(dsn_version: str | None) -> dict[str, str]:
    def dist(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    try:
        mosq = subprocess.run([which("mosquitto"), "-h"], capture_output=True, text=True,
                              timeout=10, check=False).stdout.splitlines()[0]
    except (RuntimeError, OSError, IndexError, subprocess.TimeoutExpired):
        mosq = "unknown"
    try:
        from cryptography.hazmat.backends.openssl.backend import backend

        crypto_ssl = backend.openssl_version_text()
    except Exception:  # noqa: BLE001 - informational only
        crypto_ssl = "unknown"
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "machine": f"{os.cpu_count()} cores, {model}, "
                   f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB, "
                   f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "aiomqtt": dist("aiomqtt"), "paho-mqtt": dist("paho-mqtt"), "gmqtt": dist("gmqtt"),
        "aiohttp": dist("aiohttp"), "msgspec": dist("msgspec"),
        "cryptography": f"{dist('cryptography')} ({crypto_ssl})",
        "mosquitto": mosq, "openssl (ssl module)": ssl.OPENSSL_VERSION,
        "postgresql": dsn_version or "not measured",
    }


LIMIT: Final = 1.3
"""Each CPU and latency target: at most this many times its floor, measured in the run."""
MEMORY_ALLOWANCE: Final = 2 * 1024
"""Memory per query in flight: at most bare aiohttp's per held request plus this."""


@dataclass(frozen=True)
class Floor:
    """What one figure cannot go below on this design, from parts measured in the run."""

    value: float
    parts: str
    """What it is made of, as the report says it."""


def _floors(res: Results, total: int, raw_labels: list[str]) -> dict[str, Floor]:
    """The floor under each figure with a target, from what this run measured (the
    signatures, bare aiohttp, the raw MQTT exchange); a figure's floor is missing when a
    part of it was not measured."""
    floors: dict[str, Floor] = {}
    c = res.floor.get("crypto")
    if not c:
        return floors
    jwt, qsign, qverify = c["verify_query_jwt_us"], c["sign_question_us"], c["verify_question_us"]
    rsign, rverify = c["sign_reply_us"], c["verify_reply_us"]

    def leanest(slot: dict[str, list[dict[str, Any]]], key: str) -> tuple[str, float]:
        label = _best_raw(slot, raw_labels, key)
        if label is None:
            return "not measured", float("nan")
        return label, _spread(slot[label], key).median

    http = res.floor.get("http")
    h = http["cpu_us_per_answer"] if http else float("nan")
    raw5_label, raw5 = leanest(res.throughput, "cpu_us_per_answer")
    floors["cpu5"] = Floor(h + jwt + qsign + 5 * rverify + raw5, (
        f"bare aiohttp {h:.0f} + query JWT verified {jwt:.0f} + question signed {qsign:.0f} + "
        f"5 replies verified {5 * rverify:.0f} + the raw exchange ({raw5_label}) {raw5:.0f} µs"))
    raw311_label, raw311 = leanest(res.cpu311, "cpu_us_per_reply")
    floors["cpu311"] = Floor(rverify + raw311, (
        f"reply verified {rverify:.1f} + the raw exchange ({raw311_label}) {raw311:.1f} µs"))
    slot = res.latency.get(total, {})
    fastest = _best_raw(slot, raw_labels, "p50")
    if fastest is not None:
        base = _spread(slot[fastest], "p50").median
        signing_ms = total * (qverify + rsign + rverify) / 1000
        floors["p50"] = Floor(base + signing_ms / 2, (
            f"the raw exchange ({fastest}) {base:.1f} ms + {total} × (question verified "
            f"{qverify:.0f} + reply signed {rsign:.0f} + reply verified {rverify:.0f} µs) = "
            f"{signing_ms:.1f} ms of CPU on 2 cores"))
    per_answer = jwt + qsign + qsign + 5 * (qverify + rsign + rverify)
    parts = (f"the signatures of one answer, machine-wide: query JWT signed ~{qsign:.0f} "
             f"and verified {jwt:.0f}, question signed {qsign:.0f}, 5 × (question "
             f"verified, reply signed, reply verified) = {per_answer:.0f} µs")
    exchange = _best_raw(res.throughput, raw_labels, "per_s", max)
    exchange_us = (_spread(res.throughput[exchange], "machine_us:all").median
                   if exchange is not None else float("nan"))
    if not math.isnan(exchange_us):
        parts += (f" + the raw exchange ({exchange}) machine-wide {exchange_us:.0f} µs "
                  "(its requester, responders and Mosquitto) = "
                  f"{per_answer + exchange_us:.0f} µs")
        per_answer += exchange_us
    floors["per_s"] = Floor(2e6 / per_answer, f"{parts}; 2 cores / that")
    held = res.floor.get("http_memory")
    if held:
        floors["memory"] = Floor(held["per_query_bytes"],
                                 "bare aiohttp holding one request (connection, request, "
                                 "handler task)")
    return floors


def _targets(res: Results, total: int, floors: dict[str, Floor]) -> list[Target]:
    """Issue 21's targets, each a ratio measured in this run: against the HTTP fan-out peer,
    and against the floor."""
    targets: list[Target] = []
    nan = float("nan")

    def median(runs: list[dict[str, Any]] | None, key: str) -> float:
        return _spread(runs or [], key).median

    def known(*values: float) -> bool:
        return not any(math.isnan(v) for v in values)

    slot = res.latency.get(total, {})
    ours, theirs = median(slot.get("samsvar"), "p50"), median(slot.get(PEER), "p50")
    targets.append(Target(
        f"samsvar ahead of {PEER} on N={total} answer p50", f"< 1.00× {PEER}",
        f"{ours:.1f} / {theirs:.1f} ms = {ours / theirs:.2f}×" if known(ours, theirs)
        else "not measured", ours < theirs if known(ours, theirs) else None))
    ours, theirs = median(res.throughput.get("samsvar"), "per_s"), median(
        res.throughput.get(PEER), "per_s")
    targets.append(Target(
        f"samsvar ahead of {PEER} on N=5 answers/s", f"> 1.00× {PEER}",
        f"{ours:.0f} / {theirs:.0f} = {ours / theirs:.2f}×" if known(ours, theirs)
        else "not measured", ours > theirs if known(ours, theirs) else None))
    for key, name, runs, figure, fmt in (
            ("cpu5", "broker CPU per answer at N=5", res.throughput.get("samsvar"),
             "cpu_us_per_answer", "{:.0f} µs"),
            ("cpu311", f"broker CPU per reply at N={total}", res.cpu311.get("samsvar"),
             "cpu_us_per_reply", "{:.1f} µs"),
            ("p50", f"N={total} answer p50", slot.get("samsvar"), "p50", "{:.1f} ms")):
        value = median(runs, figure)
        floor = floors[key].value if key in floors else nan
        ok = known(value, floor)
        targets.append(Target(
            f"{name} ≤ {LIMIT:.1f}× its floor", f"≤ {LIMIT:.2f}×",
            (f"{fmt.format(value)} / floor {fmt.format(floor)} = {value / floor:.2f}×" if ok
             else "not measured"), value <= LIMIT * floor if ok else None))
    value = res.memory["per_query_bytes"] if res.memory else nan
    floor = floors["memory"].value if "memory" in floors else nan
    ok = known(value, floor)
    targets.append(Target(
        f"memory per query in flight ≤ bare aiohttp + {MEMORY_ALLOWANCE // 1024} KiB",
        f"≤ +{MEMORY_ALLOWANCE / 1024:.2f} KiB",
        (f"{value / 1024:.2f} KiB = bare aiohttp {floor / 1024:.2f} "
         f"+ {(value - floor) / 1024:.2f} KiB" if ok else "not measured"),
        value <= floor + MEMORY_ALLOWANCE if ok else None))
    return targets


def _floor_table(res: Results, total: int, floors: dict[str, Floor]) -> Table:
    """Each target beside its floor: what the whole job cannot do without, measured in this
    run (signatures, bare HTTP, the raw MQTT exchange); everything else comes on top."""
    t = Table("The floor under each target (measured in this run)",
              ["figure", "what the whole job cannot do without", "floor", "target",
               "measured", "ratio to the floor"])
    rows = (("cpu5", "broker CPU per answer, N=5", res.throughput.get("samsvar", []),
             "cpu_us_per_answer", "{:.0f} µs", f"≤ {LIMIT:.1f}× floor"),
            ("cpu311", f"broker CPU per reply, N={total}", res.cpu311.get("samsvar", []),
             "cpu_us_per_reply", "{:.1f} µs", f"≤ {LIMIT:.1f}× floor"),
            ("p50", f"answer p50, N={total}", res.latency.get(total, {}).get("samsvar", []),
             "p50", "{:.1f} ms", f"≤ {LIMIT:.1f}× floor"),
            ("per_s", "answers/s, N=5", res.throughput.get("samsvar", []), "per_s",
             "{:,.0f}/s", f"(none; ahead of {PEER})"))
    for key, name, runs, figure, fmt, target in rows:
        if key not in floors:
            continue
        f, value = floors[key], _spread(runs, figure).median
        bound = ("≤ " if key == "per_s" else "") + fmt.format(f.value)
        t.rows.append([name, f.parts, bound, target, fmt.format(value),
                       ratio(value, f.value)])
    if "memory" in floors:
        f = floors["memory"]
        ours = res.memory["per_query_bytes"] if res.memory else float("nan")
        t.rows.append(["broker memory per in-flight query", f.parts,
                       f"{f.value / 1024:.2f} KiB",
                       f"≤ floor + {MEMORY_ALLOWANCE / 1024:.2f} KiB", f"{ours / 1024:.2f} KiB",
                       f"+{(ours - f.value) / 1024:.2f} KiB"])
    t.notes += [
        ("Floor: only what the whole job must do, measured minutes apart on this machine. "
        "Signatures: `python -m bench.floor crypto`, the broker's own code (schemas.jose, "
        "the default algorithm: Ed25519 by libsodium) on payloads of the real sizes: CPU time "
        "(not wall time, which on a shared machine counts other processes' turns), medians "
        "of 7 rounds in one otherwise idle process. Bare aiohttp: `python -m bench.floor "
        "http`, the HTTP server the broker is built on with nothing behind it, driven by the "
        "same load generator (CPU per request at 64 in flight; RSS per request held, 10,000 "
        "held)."),
        ("Everything else comes on top of a floor: reading and checking JSON, the law, merging, "
        "the access log, the broker's and the adapters' own Python. A target below its floor "
        "cannot be reached by this design on this machine; a target just above it leaves "
        "that much for everything else."),
        ("Answer p50 at N: a lower bound when the raw exchange already keeps both cores busy "
        "(its requester, responders and Mosquitto together; see the CPU table): the "
        "signature work then adds at least half its CPU time to the wall time."),
    ]
    return t


def _algorithms_table(found: dict[str, dict[str, float]]) -> Table:
    """The signature algorithms the registry allows, on the real sizes (issue 21)."""
    t = Table("Signature algorithms on the real payload sizes (µs per operation)",
              ["algorithm (library)", "query JWT sign / verify", "question sign / verify",
               "reply sign / verify", "broker, per answer at N=5",
               "the whole job, per answer at N=5"])
    least = min(found, key=lambda name: found[name]["job_per_answer_n5"])
    for name, us in found.items():
        t.rows.append([name + (" (least)" if name == least else ""),
                       f"{us['sign_query']:.0f} / {us['verify_query']:.0f}",
                       f"{us['sign_question']:.0f} / {us['verify_question']:.0f}",
                       f"{us['sign_reply']:.0f} / {us['verify_reply']:.0f}",
                       f"{us['broker_per_answer_n5']:.0f}", f"{us['job_per_answer_n5']:.0f}"])
    t.notes.append("`python -m bench.floor algorithms`: signing inputs of the real sizes (a query "
                   "JWT ~700 B, the signed question and reply of this run), 16 keys in turn, CPU "
                   "time, the median of 15 rounds of 200 calls, all taking turns. The broker's "
                   "part of one answer at N=5: the query verified, the question signed, 5 replies "
                   "verified; the whole job's: the query signed too, and 5 × (question verified, "
                   "reply signed). New keys (`samsvar keys generate`, the demo, this bench) use "
                   "schemas.jose.DEFAULT_ALG, Ed25519 through libsodium; ES256 stays supported.")
    return t


_RAW_TWIN: dict[str, str] = {"broker": "requester", "adapters": "responders",
                             "Mosquitto": "Mosquitto", "all": "all"}
"""Which process of the raw exchange does the part of each of the whole job's."""


def _best_raw(slot: dict[str, list[dict[str, Any]]], raw_labels: list[str], key: str,
              pick: Callable[..., str] = min) -> str | None:
    """The raw client whose runs in ``slot`` have the lowest median ``key`` (``pick=max``:
    the highest), or None if no raw client was measured there."""
    found = {lb: _spread(slot[lb], key).median for lb in raw_labels if slot.get(lb)}
    return pick(found, key=found.__getitem__) if found else None


def _spread(runs: list[dict[str, Any]], key: str) -> Spread:
    return spread([r[key] for r in runs if key in r])


def build_report(res: Results, b: Bench, command: str, started: float) -> tuple[str, str]:
    assert b.fed is not None
    fed = b.fed
    tables: list[Table] = []
    raw_labels = [lb for lb, _, _ in RAW_CLIENTS]

    if res.latency:
        t = Table("Latency: one query at a time (ms)",
                  ["N", "samsvar p50", "samsvar p99", f"{PEER} p50", f"{PEER} p99",
                   f"samsvar / {PEER} p50", *[f"{lb} p50" for lb in raw_labels],
                   "fastest raw p50 / p99", "ratio p50", "ratio p99", "incomplete"])
        for n, slot in sorted(res.latency.items()):
            ours = slot.get("samsvar", [])
            p50, p99 = _spread(ours, "p50"), _spread(ours, "p99")
            raws = {lb: (_spread(slot.get(lb, []), "p50"), _spread(slot.get(lb, []), "p99"))
                    for lb in raw_labels}
            fastest = _best_raw(slot, raw_labels, "p50")
            f50, f99 = raws[fastest] if fastest else (spread([]), spread([]))
            t.rows.append([str(n), fmt_ms(p50), fmt_ms(p99), *[fmt_ms(raws[lb][0]) for lb in
                                                              raw_labels],
                           f"{f50.median:.2f} / {f99.median:.2f} ({fastest})",
                           ratio(p50.median, f50.median), ratio(p99.median, f99.median),
                           str(sum(r["incomplete"] for r in ours))])
            peer = slot.get(PEER, [])
            q50, q99 = _spread(peer, "p50"), _spread(peer, "p99")
            t.rows[-1][3:3] = [fmt_ms(q50), fmt_ms(q99), ratio(p50.median, q50.median)]
        t.notes.append("samsvar: HTTP POST of a signed JWT → broker → N adapters → answer, "
                       "measured by the load generator; raw: one question to N topics and N "
                       "replies back, measured by the requester. Cells: median of the runs "
                       "(min–max).")
        t.notes.append(f"{PEER}: the incumbent design (bench/httpfanout.py): the same broker "
                       "core, the same adapters and the same load generator, the questions "
                       "POSTed to each producer's own HTTP endpoint over keep-alive "
                       "connections and the signed replies read from the responses.")
        tables.append(t)

    if res.throughput:
        ours = res.throughput.get("samsvar", [])
        t = Table("Throughput: fan-out 5, 64 queries (raw: 64 scatter-gathers) in flight",
                  ["client", "answers/s", "p50 ms", "p99 ms", "ratio answers/s to fastest raw",
                   "incomplete"])
        fastest = _best_raw(res.throughput, raw_labels, "per_s", max)
        best = _spread(res.throughput[fastest], "per_s").median if fastest else float("nan")
        for label in ["samsvar", PEER, *raw_labels]:
            runs = res.throughput.get(label, [])
            if not runs:
                continue
            s = _spread(runs, "per_s")
            t.rows.append([label + (" (fastest raw)" if label == fastest else ""),
                           s.text("{:.0f}"), fmt_ms(_spread(runs, "p50")),
                           fmt_ms(_spread(runs, "p99")), ratio(s.median, best),
                           str(sum(r.get("incomplete", 0) for r in runs))])
        tables.append(t)

    if res.throughput.get("samsvar") or res.cpu311.get("samsvar"):
        t = Table("CPU: the broker process (psutil user+system, all threads) beside the raw "
                  "requester process (its own CPU time)",
                  ["load", "client", "µs per answer", "µs per reply",
                   "of it the event-loop thread, µs per answer", "answers/s in window",
                   "ratio µs/answer to leanest raw"])
        for load, slot in (("N=5, 64 in flight", res.throughput),
                           (f"N={fed.total}, 4 in flight", res.cpu311)):
            leanest = _best_raw(slot, raw_labels, "cpu_us_per_answer")
            low = _spread(slot[leanest], "cpu_us_per_answer").median if leanest else float("nan")
            for label in ["samsvar", PEER, *raw_labels]:
                runs = slot.get(label, [])
                if not runs:
                    continue
                per_answer = _spread(runs, "cpu_us_per_answer")
                t.rows.append([load, {"samsvar": "samsvar broker",
                                      PEER: f"{PEER} peer broker"}.get(label, label)
                               + (" (leanest raw)" if label == leanest else ""),
                               per_answer.text("{:.0f}"),
                               _spread(runs, "cpu_us_per_reply").text("{:.1f}"),
                               _spread(runs, "loop_cpu_us_per_answer").text("{:.0f}")
                               if label in ("samsvar", PEER) else "–",
                               _spread(runs, "per_s").text("{:.1f}"),
                               ratio(per_answer.median, low)])
        t.notes.append("The broker's figure is its whole process (HTTP, JWT, law, fan-out, "
                       "reply verification, merge, access log thread); the raw requester does "
                       "only the MQTT scatter-gather. Producers run on the same 2 cores in both.")
        t.notes.append("The event-loop thread: the broker's main thread alone (psutil's "
                       "per-thread times); the rest is the access log's SQLite thread and "
                       "the runtime's own threads.")
        tables.append(t)

    ours = res.throughput.get("samsvar", [])
    if any("machine_us:all" in r for r in ours):
        raw_label = _best_raw(res.throughput, raw_labels, "per_s", max)
        raw = res.throughput[raw_label] if raw_label else []
        peer = res.throughput.get(PEER, [])
        t = Table("The whole machine's CPU per answer at N=5, 64 in flight",
                  ["process", "µs per answer", "share of the 2 cores",
                   f"{PEER}: µs per answer", "share of the 2 cores",
                   f"the raw exchange ({raw_label or 'not measured'}): process", "µs per answer",
                   "share of the 2 cores"])

        def cells(runs: list[dict[str, Any]], name: str) -> list[str]:
            if not any(f"machine_us:{name}" in r for r in runs):
                return ["–", "–"]
            busy = spread([r[f"machine_us:{name}"] * r["per_s"] / 1e6 / 2 for r in runs
                           if f"machine_us:{name}" in r])
            return [_spread(runs, f"machine_us:{name}").text("{:.0f}"), busy.text("{:.0%}")]

        names = [k.split(":", 1)[1] for k in ours[0] if k.startswith("machine_us:")]
        for name in names:
            twin = _RAW_TWIN.get(name)
            t.rows.append([{"all": "all of them"}.get(name, name), *cells(ours, name),
                           *cells(peer, name),
                           {"all": "all of them"}.get(twin or "", twin or "–"),
                           *(cells(raw, twin) if twin else ["–", "–"])])
        t.notes.append("psutil user+system time of each process over the load generator's "
                       "measured window, divided by the answers in it: the broker, the adapter "
                       "processes (all groups; at N=5 five adapters answer), Mosquitto and the "
                       "load generator itself. What one answer costs the machine, and so how "
                       "many answers two cores can give at most (1 s × 2 / the total).")
        t.notes.append(f"{PEER}: the same processes of the peer, read the same way: its "
                       "broker, the processes hosting its producers' HTTP endpoints, and the "
                       "load generator (no MQTT server).")
        t.notes.append("The raw exchange beside it, read the same way over its requester's "
                       "window: the requester, the process hosting its responders, and "
                       "Mosquitto; the fastest raw client of the throughput table.")
        tables.append(t)

    if res.log.get("sqlite") or res.log.get("postgresql") or res.log.get("postgresql_error"):
        t = Table("Access log under the throughput load (N=5, 64 in flight)",
                  ["store", "entries/s (= answers/s)", "commits/s", "rows written (check)"])
        for store in ("sqlite", "postgresql"):
            runs = res.log.get(store) or []
            metric = res.log.get(f"{store}_metric")
            commits = "not observable yet"
            if metric and runs and all("commits_per_s" in r for r in runs):
                commits = _spread(runs, "commits_per_s").text("{:.0f}")
            if runs:
                t.rows.append([store, _spread(runs, "per_s").text("{:.0f}"), commits,
                               str(res.log.get(f"{store}_rows", "?"))])
            elif store == "postgresql" and res.log.get("postgresql_error"):
                t.rows.append([store, "not measured: " + res.log["postgresql_error"][:80], "",
                               ""])
        if not (res.log.get("sqlite_metric") or res.log.get("postgresql_metric")):
            t.notes.append("The broker's /metrics exposes no access-log commit counter "
                           "(samsvar_access_log_commit_seconds counts entries, not commits), "
                           "so commits per second and entries per commit cannot be read from "
                           "outside; every 200 answer is one durable entry, so entries/s = "
                           "answers/s. `python -m bench.accesslog_bench` measures commits of "
                           "the log alone.")
        tables.append(t)

    if res.memory:
        m = res.memory
        per = m["per_query_bytes"]
        t = Table(f"Broker memory with {HELD:,} queries in flight (fan-out 5, producers never "
                  "answer)", ["RSS idle", "RSS loaded", "per in-flight query",
                              "broker HTTP connections", "in-flight metric"])
        t.rows.append([f"{m['rss_idle'] / 2**20:.1f} MiB", f"{m['rss_loaded'] / 2**20:.1f} MiB",
                       f"{per / 1024:.2f} KiB", str(m["established"]),
                       str(m["in_flight_metric"] if m["in_flight_metric"] is not None
                           else "not exposed")])
        t.notes.append("Single run (the broker is restarted for it): RSS_idle after a warm-up "
                       "of answered queries; RSS_loaded once the broker's CPU has gone quiet "
                       f"with {m['measured_held']:,} held (its in-flight gauge; "
                       f"{m['settle_s']:.0f} s after the first was sent); per query = "
                       "(RSS_loaded - RSS_idle) / held. Includes each query's HTTP connection, "
                       "request, handler task and pending fan-out state.")
        tables.append(t)

    floors = _floors(res, fed.total, raw_labels)
    if floors:
        tables.append(_floor_table(res, fed.total, floors))
    if res.floor.get("algorithms"):
        tables.append(_algorithms_table(res.floor["algorithms"]))
    targets = _targets(res, fed.total, floors)

    versions = _versions(res.log.get("postgresql_version"))
    groups = min(MAX_GROUPS, fed.total)
    setup = [
        (f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; whole run "
         f"{(time.monotonic() - started) / 60:.1f} min"),
        *[f"- {k}: {v}" for k, v in versions.items()],
        f"- command: `{command}`",
        ("- load on the machine besides this benchmark: load average (1/5/15 min) "
         f"{'/'.join(f'{x:.2f}' for x in b.args.loadavg_start)} at the start, "
         f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())} at the end (2 cores; the machine "
         "is shared with other sessions' test runs, so some runs lose CPU to them)"),
        (f"- federation: {fed.total} producers, run as {groups} processes of "
         f"~{fed.total // groups} `producer_adapter.Adapter`s each (asyncio tasks, one MQTT "
         "connection each, gmqtt, uvloop; in-memory records, no block register, no disclosure "
         "log, max_concurrent 64); broker as `python -m samsvar broker --log-level warning` "
         "(gmqtt, uvloop) with a SQLite access log (PostgreSQL for the log row); load generator "
         "in its own process (one keep-alive HTTP/1.1 connection per query in flight, "
         "bench/loadgen.py), signing a fresh EdDSA query JWT per request with "
         "consumer_client.sign_query"),
        (f"- messages: signed question {fed.question_bytes} B, signed reply {fed.reply_bytes} B "
         "(2 records); the raw baseline sends payloads of exactly these sizes; QoS 1, MQTT 5 "
         "both ways"),
        ("- raw baseline: one responder process per client hosting N connections, one "
         "requester process; `aiomqtt` = aiomqtt 2.x with its defaults (paho leaves Nagle "
         "on), `+nodelay` = with TCP_NODELAY on the client socket as the broker and adapters "
         "set it (transport.settings.NODELAY), `gmqtt` (asyncio "
         "transports set TCP_NODELAY), `paho+nodelay` = paho-mqtt driven by hand from one "
         "selectors loop"),
        ("- Mosquitto: own config, `set_tcp_nodelay true`, `persistence false`, "
         "`max_queued_messages 1000000`, `max_inflight_messages 1000` (so a client may "
         "publish 1,000 unacknowledged: the Receive Maximum; the default 20 makes a fan-out "
         "to 311 wait 15 PUBACK round trips, raw and samsvar alike), as deploy/mosquitto.conf; "
         "everything else default"),
        (f"- runs per figure: {b.plan.runs}; raw and samsvar runs interleaved, minutes apart "
         "at most"),
    ]
    if any(res.skipped.values()):
        setup.append("- skipped for the time budget: " + ", ".join(
            f"{k} {v}" for k, v in res.skipped.items() if v))
    target_table = Table("Targets (PASS/MISS)", ["target", "limit", "measured", "verdict"],
                         [[t.name, t.limit, t.measured, t.verdict] for t in targets])

    md = [("# Benchmark results: the whole job against the raw transport and against the "
           "incumbent design, an HTTP call per producer (issues 7 and 21)"), "",
          ("Produced by `python -m bench` (see bench/__main__.py and bench/scenarios.py). "
           "Measurement only."), "",
          "## Set-up", "", *setup, "", target_table.markdown(),
          "## Figures", "", *[t.markdown() for t in tables]]
    for label, prof in res.profile.items():
        md += [f"## Where the time goes (py-spy, broker, {label})", "", *profile_md(prof)]
    plain = "\n".join(t.plain() for t in [target_table, *tables])
    return "\n".join(md) + "\n", plain
