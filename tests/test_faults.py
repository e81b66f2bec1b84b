"""Faults lose nothing: a connection killed mid-repair, and restore as a property."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

import ledger_rules
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, func, inspect, select, text, update

from invariants import invariant, run
from invariants.database import enable_sqlite_transactions
from invariants.errors import DatabaseError
from invariants.journal import journal
from invariants.restore import restore_run

ISOLATED = {"entrypoints": False, "discover": False, "environ": {}}
TESTS = Path(__file__).parent

SLOW = {
    "postgresql": "(SELECT 1 FROM pg_sleep(30)) = 1",
    "mysql": "SLEEP(30) = 0",
    "sqlite": "(WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c "
    "WHERE n < 300000000) SELECT count(*) FROM c) > 0",
}


def slow_rules_module() -> types.ModuleType:
    """A rule whose repair changes accounts, then stalls in a second statement."""
    accounts, owners = ledger_rules.accounts, ledger_rules.owners

    @invariant("faulty.slow_repair", scope_key="owner_id")
    def slow_repair():
        """Negative balances, repaired slowly."""
        return select(accounts.c.id, accounts.c.owner_id).where(accounts.c.balance < 0)

    @slow_repair.repair
    def fix(violations, dialect):
        ids = select(violations.c.id).scalar_subquery()
        return [
            update(accounts).where(accounts.c.id.in_(ids)).values(balance=0),
            update(owners).where(text(SLOW[dialect])).values(name="stalled"),
        ]

    module = types.ModuleType("faulty")
    module.slow_repair = slow_repair
    return module


def dump(engine) -> list:
    with engine.connect() as conn:
        return [
            [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns))]
            for t in (ledger_rules.owners, ledger_rules.accounts)
        ]


def journal_rows(engine) -> int:
    with engine.connect() as conn:
        if journal.name not in inspect(conn).get_table_names():
            return 0
        return conn.execute(select(func.count()).select_from(journal)).scalar_one()


def kill_the_repairer(engine) -> bool:
    """From a second connection, end the session that is stalled in the slow statement."""
    deadline = time.monotonic() + 20
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            if engine.dialect.name == "postgresql":
                pid = conn.execute(
                    text(
                        "SELECT pid FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' "
                        "AND pid <> pg_backend_pid()"
                    )
                ).scalar()
                if pid:
                    conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                    return True
            else:
                pid = conn.execute(
                    text(
                        "SELECT id FROM information_schema.processlist "
                        "WHERE info LIKE '%SLEEP(30)%' AND id <> CONNECTION_ID()"
                    )
                ).scalar()
                if pid:
                    conn.execute(text(f"KILL {int(pid)}"))
                    return True
            conn.rollback()
            time.sleep(0.05)
    return False


def test_connection_killed_mid_repair_leaves_no_partial_repair_or_journal(engine):
    with engine.begin() as conn:
        ledger_rules.setup(conn, [(1, -5), (2, -1)])
    before = dump(engine)
    if engine.dialect.name == "sqlite":
        killed_in_process(engine)
    else:
        outcome: dict[str, BaseException] = {}

        def repair() -> None:
            try:
                run(
                    engine.url.render_as_string(False),
                    repair=True,
                    plugins=[slow_rules_module()],
                    **ISOLATED,
                )
            except BaseException as exc:  # the run must fail loudly, not half-commit
                outcome["error"] = exc

        worker = threading.Thread(target=repair)
        worker.start()
        assert kill_the_repairer(engine), "the repair never reached its slow statement"
        worker.join(60)
        assert isinstance(outcome.get("error"), DatabaseError)
    assert dump(engine) == before
    assert journal_rows(engine) == 0


def killed_in_process(engine) -> None:
    """SQLite has no server: kill -9 the repairing process itself in the slow statement."""
    script = (
        "import sys; sys.path.insert(0, sys.argv[2]); import test_faults, invariants;"
        "invariants.run(sys.argv[1], repair=True, plugins=[test_faults.slow_rules_module()],"
        " entrypoints=False, discover=False, environ={})"
    )
    url = engine.url.render_as_string(False)
    proc = subprocess.Popen(
        [sys.executable, "-c", script, url, str(TESTS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(3)
    assert proc.poll() is None, proc.communicate()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)


BALANCES = st.lists(st.tuples(st.integers(1, 6), st.integers(-20, 20)), min_size=0, max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(balances=BALANCES, unnamed=st.sets(st.integers(1, 6)))
def test_restore_after_repair_gives_back_the_original_rows(balances, unnamed):
    with tempfile.TemporaryDirectory() as folder:
        engine = create_engine(f"sqlite:///{folder}/p.db")
        enable_sqlite_transactions(engine)
        with engine.begin() as conn:
            ledger_rules.setup(conn, balances)
            conn.execute(
                update(ledger_rules.owners)
                .where(ledger_rules.owners.c.id.in_(unnamed))
                .values(name=None)
            )
        before = dump(engine)
        report = run(
            engine,
            repair=True,
            plugins=["ledger_rules"],
            select=["ledger.balance*", "ledger.owner*"],
            **ISOLATED,
        )
        assert report.exit_code == 0
        again = run(
            engine,
            repair=True,
            plugins=["ledger_rules"],
            select=["ledger.balance*", "ledger.owner*"],
            **ISOLATED,
        )
        assert all(r.repair is None for r in again.reports)  # idempotent: nothing left to do
        changed = sum(r.repair.rows_changed for r in report.reports if r.repair)
        if changed:
            restore_run(engine, report.run_id)
        assert dump(engine) == before
        engine.dispose()
