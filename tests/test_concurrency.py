"""Many repairers at once: one repairs, the others wait (or give up with exit code 6)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ledger_rules
from sqlalchemy import create_engine, func, select

from invariants.exitcodes import ExitCode
from invariants.journal import journal

TESTS = Path(__file__).parent
SLOW_PLUGIN = """
import time
from invariants import hookimpl

@hookimpl(wrapper=True)
def invariants_run_repair(rule, conn, violations, context):
    result = yield
    time.sleep(3)  # hold the lock long enough for the others to queue behind it
    return result
"""


def start(url: str, folder: Path, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVARIANTS_")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(folder)])
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "invariants",
            "--db",
            url,
            "--repair",
            "-p",
            "ledger_rules",
            "-p",
            "slowrepair",
            "-p",
            "no:billing",
            "-k",
            "balance",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def prepare(db_url: str, folder: Path) -> int:
    (folder / "slowrepair.py").write_text(SLOW_PLUGIN)
    engine = create_engine(db_url)
    with engine.begin() as conn:
        ledger_rules.setup(conn, [(o, -o) for o in range(1, 41)])
    engine.dispose()
    return 40


def journalled(db_url: str) -> list[tuple]:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(select(journal.c.k1, func.count()).group_by(journal.c.k1)).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def test_ten_repairers_at_once_repair_once(db_url, tmp_path):
    violating = prepare(db_url, tmp_path)
    procs = [start(db_url, tmp_path) for _ in range(10)]
    results = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    assert codes == [ExitCode.OK] * 10, results
    repaired = [out for out, _ in results if "REPAIRED (40 rows, 40 changed)" in out]
    assert len(repaired) == 1
    rows = journalled(db_url)
    assert len(rows) == violating and all(n == 1 for _, n in rows)


def test_a_repairer_that_cannot_wait_exits_six(db_url, tmp_path):
    prepare(db_url, tmp_path)
    first = start(db_url, tmp_path)
    second = None
    try:
        import time

        time.sleep(1.0 if "sqlite" not in db_url else 0.8)
        second = start(db_url, tmp_path, "--lock-timeout", "0.1")
        _, err = second.communicate(timeout=120)
        out, _ = first.communicate(timeout=120)
    finally:
        first.kill() if first.poll() is None else None
    assert first.returncode == ExitCode.OK, out
    assert second.returncode == ExitCode.LOCKED, err
    assert "repair lock" in err and "Traceback" not in err
