#!/usr/bin/env python3
"""Issue 17 peer: PgQueuer (PyPI `pgqueuer`, pinned in README.md) on the
same Postgres server, one full cycle per job: enqueue -> dequeue (its
reserve: `FOR UPDATE SKIP LOCKED`, status 'picked') -> completion (its
ack: the job row deleted and a row written to its log table).

Prints one JSON object per line on stdout per configuration; progress
goes to stderr. See README.md beside this file.

Modes (--mode):
  drain       (backlog = N) enqueue all N jobs from one producer, then
              start the consumers; timed from the first enqueue until
              every consumer has returned after the N-th job ran (which
              flushes PgQueuer's buffered completions).
  concurrent  (backlog = 0) the consumers are started (and idle, on
              LISTEN/NOTIFY) first; timed from the first enqueue, the
              producer enqueueing while they consume, to the same end.

Consumers: one PgQueuer QueueManager per consumer, each on its own
asyncpg connection, all in this one process and event loop (uvloop when
installed), as PgQueuer's own tools/benchmark.py runs them. A
QueueManager fetches `batch_size` jobs per dequeue query and runs them as
asyncio tasks; completions are buffered and written batch_size at a time
(or every 0.1 s). Batch 1: enqueue one job a call, batch_size=1;
batch 100: enqueue lists of 100, batch_size=100.

  /work/peers-venv/bin/python scripts/queue_bench/pgqueuer_bench.py --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import timedelta
from importlib.metadata import version

import asyncpg

from pgqueuer import AsyncpgDriver, QueueManager
from pgqueuer.queries import Queries

PAYLOAD = b'{"event":"bench","n":1}'
ENTRYPOINT = "bench"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ints(s: str) -> list[int]:
    return [int(x.replace("_", "")) for x in s.split(",") if x]


async def ensure_database(dsn: str, db: str) -> None:
    conn = await asyncpg.connect(dsn=dsn, database="postgres")
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", db):
            await conn.execute(f'CREATE DATABASE "{db}"')
    finally:
        await conn.close()


async def reset(conn: asyncpg.Connection, q: Queries) -> None:
    """An empty queue, log and statistics before each run."""
    s = q.qbe.settings
    await conn.execute(
        f"TRUNCATE {s.queue_table}, {s.queue_table_log}, {s.statistics_table}"
    )
    await conn.execute(f"VACUUM ANALYZE {s.queue_table}")


async def enqueue_all(q: Queries, jobs: int, batch: int) -> None:
    left = jobs
    while left > 0:
        if batch == 1:
            await q.enqueue(ENTRYPOINT, PAYLOAD, 0)
            left -= 1
        else:
            k = min(batch, left)
            await q.enqueue([ENTRYPOINT] * k, [PAYLOAD] * k, [0] * k)
            left -= k


async def one_run(
    dsn: str, consumers: int, batch: int, jobs: int, mode: str
) -> tuple[float, float]:
    """Returns (seconds of the enqueueing, seconds in all)."""
    admin = await asyncpg.connect(dsn=dsn)
    producer_conn = await asyncpg.connect(dsn=dsn)
    consumer_conns = [await asyncpg.connect(dsn=dsn) for _ in range(consumers)]
    try:
        producer = Queries(AsyncpgDriver(producer_conn))
        await reset(admin, producer)

        done = 0
        all_done = asyncio.Event()
        qms: list[QueueManager] = []
        for c in consumer_conns:
            qm = QueueManager(Queries(AsyncpgDriver(c)))

            @qm.entrypoint(ENTRYPOINT)
            async def bench(job) -> None:  # noqa: ANN001 - PgQueuer's Job
                nonlocal done
                done += 1
                if done == jobs:
                    all_done.set()

            qms.append(qm)

        def start_consumers() -> list[asyncio.Task[None]]:
            return [
                asyncio.create_task(
                    qm.run(batch_size=batch, dequeue_timeout=timedelta(seconds=5))
                )
                for qm in qms
            ]

        tasks: list[asyncio.Task[None]] = []
        if mode == "concurrent":
            tasks = start_consumers()
            # Let them connect their listeners and go idle first.
            await asyncio.sleep(1.0)
            if any(t.done() for t in tasks):
                for t in tasks:
                    if t.done():
                        t.result()

        start = time.perf_counter()
        await enqueue_all(producer, jobs, batch)
        pushed = time.perf_counter() - start
        if mode == "drain":
            tasks = start_consumers()

        waiter = asyncio.create_task(all_done.wait())
        finished, _ = await asyncio.wait(
            [waiter, *tasks], return_when=asyncio.FIRST_COMPLETED, timeout=600
        )
        if waiter not in finished:
            for t in tasks:
                if t.done() and t.exception():
                    raise RuntimeError(f"a consumer failed: {t.exception()!r}")
            raise RuntimeError(f"timeout or early stop: {done} of {jobs} jobs ran")
        for qm in qms:
            qm.shutdown.set()
        # Each QueueManager flushes its buffered completions as it returns.
        await asyncio.gather(*tasks)
        total = time.perf_counter() - start

        s = producer.qbe.settings
        left = await admin.fetchval(f"SELECT count(*) FROM {s.queue_table}")
        logged = await admin.fetchval(
            f"SELECT count(*) FROM {s.queue_table_log} WHERE status = 'successful'"
        )
        if left != 0 or logged != jobs:
            raise RuntimeError(
                f"after the run: {left} jobs left in {s.queue_table}, "
                f"{logged} of {jobs} logged successful"
            )
        return pushed, total
    finally:
        for c in [admin, producer_conn, *consumer_conns]:
            await c.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--dsn", default="postgresql://postgres@127.0.0.1:5432/bench_pgqueuer"
    )
    ap.add_argument("--consumers", type=ints, default=[1, 8])
    ap.add_argument("--batch", type=ints, default=[1, 100])
    ap.add_argument("--jobs", type=ints, default=[5_000, 50_000])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mode", choices=["drain", "concurrent", "both"], default="both")
    ap.add_argument(
        "--long-run-seconds",
        type=float,
        default=20.0,
        help="a configuration whose first run takes longer than this gets only that run",
    )
    a = ap.parse_args()

    db = a.dsn.rsplit("/", 1)[1].split("?")[0]
    await ensure_database(a.dsn, db)
    conn = await asyncpg.connect(dsn=a.dsn)
    try:
        q = Queries(AsyncpgDriver(conn))
        if not await q.schema_is_installed():
            log(f"pgqueuer_bench: installing PgQueuer's schema into {db}")
            await q.install()
        server = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()

    modes = ["drain", "concurrent"] if a.mode == "both" else [a.mode]
    system = f"pgqueuer {version('pgqueuer')}"
    for mode in modes:
        for jobs in a.jobs:
            for batch in a.batch:
                for consumers in a.consumers:
                    rates: list[float] = []
                    push_s: list[float] = []
                    total_s: list[float] = []
                    error = None
                    note = None
                    for run in range(1, a.runs + 1):
                        try:
                            pushed, total = await one_run(
                                a.dsn, consumers, batch, jobs, mode
                            )
                        except Exception as e:  # recorded in the JSON line
                            error = f"{type(e).__name__}: {e}"
                            log(f"pgqueuer_bench: {mode} c{consumers} b{batch} N={jobs} run {run}: error: {error}")
                            break
                        rate = jobs / total
                        rates.append(round(rate, 1))
                        push_s.append(round(pushed, 3))
                        total_s.append(round(total, 3))
                        log(
                            f"pgqueuer_bench: {mode} c{consumers} b{batch} N={jobs} run {run}: "
                            f"enqueue {pushed:.2f} s, total {total:.2f} s, {rate:.1f} jobs/s"
                        )
                        if run == 1 and total > a.long_run_seconds and a.runs > 1:
                            note = f"1 run only: it took {total:.0f} s (> {a.long_run_seconds:.0f} s)"
                            log(f"pgqueuer_bench: {note}")
                            break
                    row = {
                        "system": system,
                        "backend": "postgres",
                        "consumers": consumers,
                        "batch": batch,
                        "jobs": jobs,
                        "backlog": jobs if mode == "drain" else 0,
                        "jobs_per_s": rates,
                        "median": round(statistics.median(rates), 1) if rates else None,
                        "mode": "enqueue all, then drain"
                        if mode == "drain"
                        else "consumers idle first, enqueue while they consume",
                        "consumer_model": f"{consumers} QueueManager(s), one connection each, one event loop",
                        "fetch_batch_size": batch,
                        "enqueue": "Queries.enqueue, 1 job a call"
                        if batch == 1
                        else "Queries.enqueue, lists of 100",
                        "push_s": push_s,
                        "total_s": total_s,
                        "server": f"PostgreSQL {server}",
                        "driver": f"asyncpg {version('asyncpg')}",
                    }
                    if note:
                        row["note"] = note
                    if error:
                        row["error"] = error
                    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        uvloop = None
    if uvloop is not None:
        uvloop.run(main())
    else:
        asyncio.run(main())
