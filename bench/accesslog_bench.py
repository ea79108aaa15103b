"""Access-log append throughput and latency, per store and number of concurrent appenders.

    python -m bench.accesslog_bench [--seconds 3] [--concurrency 1,16,64,256]
                                    [--only sqlite|postgresql] [--dsn URL] [--dir DIR]

Each run opens a fresh log (SQLite: a file in a temporary folder, on ``--dir`` if given;
PostgreSQL: a temporary schema, dropped afterwards), lets N appenders append realistic
entries back to back for ``--seconds``, then prints entries/s, commits/s, entries per
commit (group commit at work) and the p50/p99 latency of ``append`` (enqueue to durable
commit). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog

from broker.accesslog import AccessLogConfig, AccessLogError, open_access_log
from schemas.accesslog import AccessEntry, LoggedSource, LoggedUser
from schemas.jose import PrivateKey, generate_key
from schemas.records import OrgRef, UnitRef

__all__ = ["main"]

DEFAULT_DSN = os.environ.get("SAMSVAR_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True, kw_only=True)
class Result:
    store: str
    appenders: int
    seconds: float
    entries: int
    commits: int
    p50_ms: float
    p99_ms: float

    def row(self) -> str:
        per_commit = self.entries / max(self.commits, 1)
        return (f"{self.store:<10} {self.appenders:>9} {self.entries / self.seconds:>11,.0f} "
                f"{self.commits / self.seconds:>10,.0f} {per_commit:>13.1f} "
                f"{self.p50_ms:>8.2f} {self.p99_ms:>8.2f}")


HEADER = (f"{'store':<10} {'appenders':>9} {'entries/s':>11} {'commits/s':>10} "
          f"{'entries/commit':>13} {'p50 ms':>8} {'p99 ms':>8}")


def entry(worker: int, n: int) -> AccessEntry:
    """An entry the size of a real one: counts only."""
    org = OrgRef(id="SE2321000999-RE01", name="Region Exempel")
    return AccessEntry(
        time=dt.datetime.now(dt.UTC), query_id=f"bench-{worker}-{n}", instance="bench",
        outcome="answered", status=200, consumer=org, consumer_kind="vårdgivare",
        unit=UnitRef(id="SE2321000999-U100", name="Akutmottagningen"),
        user=LoggedUser(id="SE2321000999-ANLI", name="Anna Lind", role="Läkare"),
        basis="consent", subject="193803039142", types=["medication", "alerts", "diagnoses"],
        sources=[LoggedSource(producer=f"SE2321000999-P00{i}", organisation=org, status="ok",
                              disclosed={"medication": 3, "alerts": 1}) for i in range(3)],
    )


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def run_one(config: AccessLogConfig, key: PrivateKey, *, store: str, appenders: int,
                  seconds: float) -> Result:
    log = open_access_log(config, key=key, instance="bench")
    await log.open()
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    try:
        await log.append(entry(-1, 0))  # warm up: connection, statement cache
        commits_before = log.commits
        deadline = loop.time() + seconds

        async def appender(worker: int) -> None:
            n = 0
            while loop.time() < deadline:
                started = time.perf_counter()
                await log.append(entry(worker, n))
                latencies.append(time.perf_counter() - started)
                n += 1

        started = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for worker in range(appenders):
                tg.create_task(appender(worker), name=f"appender-{worker}")
        elapsed = time.perf_counter() - started
        commits = log.commits - commits_before
    finally:
        await log.close()
    latencies.sort()
    return Result(store=store, appenders=appenders, seconds=elapsed, entries=len(latencies),
                  commits=commits, p50_ms=statistics.median(latencies) * 1000,
                  p99_ms=percentile(latencies, 0.99) * 1000)


@asynccontextmanager
async def sqlite_store(where: str | None) -> AsyncIterator[AccessLogConfig]:
    with tempfile.TemporaryDirectory(prefix="accesslog-bench-", dir=where) as tmp:
        yield AccessLogConfig(kind="sqlite", path=Path(tmp) / "access-log.db")


@asynccontextmanager
async def postgres_store(dsn: str) -> AsyncIterator[AccessLogConfig]:
    import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints

    schema = f"bench_accesslog_{uuid.uuid4().hex[:10]}"
    try:
        yield AccessLogConfig(kind="postgresql", dsn=dsn, schema=schema)
    finally:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def bench(args: argparse.Namespace) -> int:
    key = generate_key()
    stores = ["sqlite", "postgresql"] if args.only is None else [args.only]
    print(f"# {args.seconds:g} s per run; python {sys.version.split()[0]}; {os.cpu_count()} CPUs")
    print(HEADER)
    for store in stores:
        for appenders in args.concurrency:
            scope = (sqlite_store(args.dir) if store == "sqlite" else postgres_store(args.dsn))
            try:
                async with scope as config:
                    result = await run_one(config, key, store=store, appenders=appenders,
                                           seconds=args.seconds)
            except AccessLogError as exc:
                print(f"{store:<10} {appenders:>9}  failed: {exc}")
                continue
            print(result.row(), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.accesslog_bench",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", default="1,16,64,256",
                        type=lambda s: [int(n) for n in s.split(",")])
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="PostgreSQL (a temporary schema)")
    parser.add_argument("--dir", help="where the SQLite file goes (default: the temp folder)")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
