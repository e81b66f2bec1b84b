"""The benchmark harness: invariants against hand-written SQL and the per-user ORM loop.

    python -m benchmarks.run                 # 1,000,000 users, SQLite and PostgreSQL
    python -m benchmarks.run --quick         # 100,000 users

Each measurement runs in a process of its own (``benchmarks.probe``), so its peak memory
is its own; times are medians of ``--repeat`` runs. Ratios compare with the hand-written
SQL of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from benchmarks.generate import drift_counts, generate
from invariants.database import engine_from_url

ROOT = Path(__file__).resolve().parent.parent
ADMIN_POSTGRESQL = os.environ.get(
    "INVARIANTS_BENCH_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
READ_ONLY = ("check", "floor_check", "check_parallel", "scoped", "scoped_one")


def probe(approach: str, url: str, users: int) -> dict[str, Any]:
    """Run one approach in a fresh interpreter and return what it measured."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.probe", approach, url, str(users)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=3600,
    )
    if out.returncode:
        raise RuntimeError(f"probe {approach} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def drop_databases() -> None:
    """Remove the throw-away PostgreSQL databases a run made."""
    admin = create_engine(ADMIN_POSTGRESQL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        names = conn.execute(
            text("SELECT datname FROM pg_database WHERE datname LIKE 'inv_bench_%'")
        ).scalars()
        for name in list(names):
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


def database(dialect: str, users: int, folder: Path) -> str:
    """A URL for an empty throw-away database of that dialect."""
    if dialect == "sqlite":
        path = folder / f"bench-{users}.db"
        path.unlink(missing_ok=True)
        return f"sqlite:///{path}"
    name = f"inv_bench_{users}"
    admin = create_engine(ADMIN_POSTGRESQL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return make_url(ADMIN_POSTGRESQL).set(database=name).render_as_string(False)


def fresh(url: str, users: int) -> float:
    engine = engine_from_url(url, create=True)
    seconds = generate(engine, users)
    engine.dispose()
    return seconds


def measure(approach: str, url: str, users: int, repeat: int, regenerate: bool) -> dict:
    runs = []
    for _ in range(repeat):
        if regenerate:
            fresh(url, users)
        runs.append(probe(approach, url, users))
    result = {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
    }
    for key in ("p99", "violations", "changed", "measured_users", "measured_seconds"):
        if key in runs[0]:
            result[key] = statistics.median(r[key] for r in runs)
    return result


def bench_dialect(dialect: str, users: int, repeat: int, folder: Path, memory_at: int | None):
    url = database(dialect, users, folder)
    results: dict[str, Any] = {"generate": {"seconds": fresh(url, users)}}
    approaches = [a for a in READ_ONLY if dialect != "sqlite" or a != "check_parallel"]
    for approach in approaches:
        print(f"  {dialect}: {approach} ...", file=sys.stderr, flush=True)
        results[approach] = measure(approach, url, users, repeat, regenerate=False)
    for approach in ("floor_repair", "repair", "orm_loop"):
        print(f"  {dialect}: {approach} ...", file=sys.stderr, flush=True)
        times = 1 if approach == "orm_loop" else repeat
        results[approach] = measure(approach, url, users, times, regenerate=True)
    if memory_at and memory_at != users:
        small = database(dialect, memory_at, folder)
        fresh(small, memory_at)
        results["check_small"] = measure("check", small, memory_at, 1, regenerate=False)
        results["repair_small"] = measure("repair", small, memory_at, 1, regenerate=False)
    return results


def ratios(r: dict[str, Any]) -> dict[str, float]:
    out = {
        "check / hand-written SQL": r["check"]["seconds"] / r["floor_check"]["seconds"],
        "repair / hand-written SQL": r["repair"]["seconds"] / r["floor_repair"]["seconds"],
        "per-user ORM loop / repair": r["orm_loop"]["seconds"] / r["repair"]["seconds"],
        "per-user ORM loop / check": r["orm_loop"]["seconds"] / r["check"]["seconds"],
    }
    if "check_parallel" in r:
        out["check / check -n 4"] = r["check"]["seconds"] / r["check_parallel"]["seconds"]
    return out


def table(users: int, results: dict[str, dict[str, Any]], memory_at: int | None) -> str:
    lines = [
        f"### {users:,} users",
        "",
        "| database | measurement | median | peak memory |",
        "| --- | --- | ---: | ---: |",
    ]
    labels = {
        "generate": "generate the data",
        "check": "invariant-run (check)",
        "floor_check": "hand-written SQL, count(*) per rule",
        "check_parallel": "invariant-run -n 4 (check)",
        "repair": "invariant-run --repair (journal included)",
        "floor_repair": "hand-written SQL repairs",
        "orm_loop": "per-user ORM loop (extrapolated)",
        "scoped": "one user's check, all six rules",
        "scoped_one": "one user's check, one rule",
        "check_small": f"invariant-run (check), {memory_at:,} users" if memory_at else "",
        "repair_small": f"invariant-run --repair, {memory_at:,} users" if memory_at else "",
    }
    for dialect, r in results.items():
        for key, label in labels.items():
            if key not in r:
                continue
            m = r[key]
            scoped = key.startswith("scoped")
            value = f"{m['seconds'] * 1000:.2f} ms" if scoped else f"{m['seconds']:.3f} s"
            if scoped:
                value += f" (p99 {m['p99'] * 1000:.2f} ms)"
            if key == "orm_loop":
                value += f" ({m['measured_users']:.0f} users took {m['measured_seconds']:.2f} s)"
            memory = f"{m['peak_rss_mb']:.0f} MB" if "peak_rss_mb" in m else "-"
            lines.append(f"| {dialect} | {label} | {value} | {memory} |")
    lines += ["", "| database | ratio | value |", "| --- | --- | ---: |"]
    for dialect, r in results.items():
        for name, value in ratios(r).items():
            lines.append(f"| {dialect} | {name} | {value:.2f}x |")
    return "\n".join(lines)


def machine() -> str:
    pg = "-"
    try:
        engine = create_engine(ADMIN_POSTGRESQL)
        with engine.connect() as conn:
            pg = conn.execute(text("SHOW server_version")).scalar()
        engine.dispose()
    except Exception:
        pass
    import sqlite3

    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, PostgreSQL {pg}, {platform.platform()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark invariants (see benchmarks/RESULTS.md)."
    )
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 users")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dialects", default="sqlite,postgresql")
    parser.add_argument(
        "--memory-at",
        type=int,
        default=100_000,
        help="also measure memory at this size, to show it does not grow",
    )
    parser.add_argument("--output", help="write the markdown table here")
    opts = parser.parse_args(argv)
    users = 100_000 if opts.quick else opts.users
    memory_at = opts.memory_at if opts.memory_at < users else None
    clock = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        try:
            for dialect in opts.dialects.split(","):
                results[dialect] = bench_dialect(
                    dialect, users, opts.repeat, Path(folder), memory_at
                )
        finally:
            if "postgresql" in opts.dialects:
                drop_databases()
    report = "\n".join(
        [
            f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}.",
            f"Command: python -m benchmarks.run --users {users} --repeat {opts.repeat} "
            f"--dialects {opts.dialects}; drift per rule: {drift_counts(min(users, 10_000))} "
            "per 10,000 users.",
            "",
            table(users, results, memory_at),
            "",
            f"(whole benchmark: {time.perf_counter() - clock:.0f} s)",
        ]
    )
    print(report)
    if opts.output:
        Path(opts.output).write_text(report + "\n")
        Path(opts.output).with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
