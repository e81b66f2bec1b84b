"""Safe repair on every dialect: dry runs, the journal, restore, limits, locks and faults."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from pathlib import Path

import ledger_rules
import pytest
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)

from invariants import ExitCode, Outcome, invariant, run
from invariants.database import enable_sqlite_transactions
from invariants.errors import UsageError
from invariants.journal import journal, runs
from invariants.locking import LockTimeout, repair_transaction
from invariants.restore import RestoreConflict, restore_run

ISOLATED = {"entrypoints": False, "discover": False, "environ": {}}
LEDGER = {"plugins": ["ledger_rules"], "select": ["ledger.balance*", "ledger.owner*"], **ISOLATED}


def seed(engine, balances, unnamed=()):
    with engine.begin() as conn:
        ledger_rules.setup(conn, balances)
        if unnamed:
            conn.execute(
                update(ledger_rules.owners)
                .where(ledger_rules.owners.c.id.in_(unnamed))
                .values(name=None)
            )


def dump(engine) -> list:
    """Every row of the ledger tables, in key order (the state a restore must bring back)."""
    with engine.connect() as conn:
        return [
            [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns))]
            for t in (ledger_rules.owners, ledger_rules.accounts)
        ]


def test_dry_run_plans_and_changes_nothing(engine):
    seed(engine, [(1, -5), (2, -1), (3, 4)], unnamed=[3])
    before = dump(engine)
    report = run(engine, repair=True, dry_run=True, **LEDGER)
    outcomes = {r.rule_id: r for r in report.reports}
    balance = outcomes["ledger.balance_not_negative"]
    assert balance.outcome is Outcome.VIOLATED
    assert "would change 2 rows" in balance.message
    statement = balance.repair.statements[0]
    assert statement.table == "accounts" and statement.rowcount == 2
    change = statement.changes[0]
    assert change["before"]["balance"] < 0 and change["after"]["balance"] == 0
    assert report.dry_run and report.exit_code == ExitCode.VIOLATIONS
    assert dump(engine) == before
    with engine.connect() as conn:
        if journal.name in inspect(conn).get_table_names():  # MariaDB keeps DDL
            assert conn.execute(select(func.count()).select_from(journal)).scalar() == 0


def test_dry_run_leaves_a_sqlite_file_byte_for_byte(sqlite_url, tmp_path):
    engine = create_engine(sqlite_url)
    enable_sqlite_transactions(engine)
    seed(engine, [(1, -5), (2, -1)], unnamed=[1])
    engine.dispose()
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    run(sqlite_url, repair=True, dry_run=True, **LEDGER)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_repair_journals_every_row_before_and_after(engine):
    seed(engine, [(1, -5), (2, -1), (3, 4)], unnamed=[2])
    report = run(engine, repair=True, **LEDGER)
    with engine.connect() as conn:
        entries = conn.execute(
            select(
                journal.c.rule_id,
                journal.c.table_name,
                journal.c.action,
                journal.c.k1,
                journal.c.before,
                journal.c.after,
            )
            .where(journal.c.run_id == report.run_id)
            .order_by(journal.c.id)
        ).all()
    assert [(e.rule_id, e.table_name, e.action) for e in entries] == [
        ("ledger.balance_not_negative", "accounts", "update"),
        ("ledger.balance_not_negative", "accounts", "update"),
        ("ledger.owner_named", "owners", "update"),
    ]
    assert all(e.before and e.after for e in entries)
    assert json.loads(entries[2].before)["name"] is None
    assert json.loads(entries[2].after)["name"] == "unknown"


def test_restore_puts_back_exactly_what_the_run_changed(engine):
    seed(engine, [(1, -5), (2, -1), (3, 4)], unnamed=[2, 3])
    before = dump(engine)
    report = run(engine, repair=True, **LEDGER)
    assert dump(engine) != before
    result = restore_run(engine, report.run_id)
    assert result.rows == 4
    assert dump(engine) == before
    with pytest.raises(UsageError, match="already restored"):
        restore_run(engine, report.run_id)


def test_restore_of_one_rule_and_dry_run(engine):
    seed(engine, [(1, -5)], unnamed=[1])
    report = run(engine, repair=True, **LEDGER)
    after_repair = dump(engine)
    dry = restore_run(engine, report.run_id, rule="ledger.owner_named", dry_run=True)
    assert dry.rows == 1 and dump(engine) == after_repair
    restore_run(engine, report.run_id, rule="ledger.owner_named")
    owners, accounts = dump(engine)
    assert owners[0][1] is None  # the name is back to NULL
    assert accounts[0][2] == 0  # the balance repair stays


def test_restore_stops_on_rows_changed_since_unless_forced(engine):
    seed(engine, [(1, -5), (2, -1)])
    report = run(engine, repair=True, **LEDGER)
    with engine.begin() as conn:
        conn.execute(
            update(ledger_rules.accounts).where(ledger_rules.accounts.c.id == 1).values(balance=99)
        )
    with pytest.raises(RestoreConflict) as caught:
        restore_run(engine, report.run_id)
    assert caught.value.count == 1
    assert json.loads(caught.value.sample[0]["pk"]) == {"id": 1}
    assert dump(engine)[1][0][2] == 99  # nothing was restored
    restore_run(engine, report.run_id, force=True)
    assert [row[2] for row in dump(engine)[1]] == [-5, -1]


def test_restore_undoes_inserts(engine):
    metadata = MetaData()
    tags = Table(
        "tags",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("owner_id", Integer, nullable=False),
        Column("label", String(20)),
    )

    @invariant("tags.every_owner_tagged", scope_key="owner_id")
    def every_owner_tagged():
        """Every owner has a tag."""
        owners = ledger_rules.owners
        return select(owners.c.id.label("owner_id")).where(
            ~select(tags.c.id).where(tags.c.owner_id == owners.c.id).exists()
        )

    @every_owner_tagged.repair
    def tag_them(violations):
        return insert(tags).from_select(
            ["owner_id", "label"], select(violations.c.owner_id, text("'new'"))
        )

    seed(engine, [(1, 1), (2, 2)])
    with engine.begin() as conn:
        metadata.create_all(conn)
    import types

    module = types.ModuleType("tagrules")
    module.every_owner_tagged = every_owner_tagged
    report = run(engine, repair=True, plugins=[module], **ISOLATED)
    assert report.reports[0].outcome is Outcome.REPAIRED
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tags)).scalar() == 2
    restore_run(engine, report.run_id)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tags)).scalar() == 0


def test_limits_refuse_then_force_repairs(engine):
    seed(engine, [(1, -5)] * 6)
    limited = {**LEDGER, "overrides": {"max_repair_rows": 5}}
    refused = run(engine, repair=True, **limited)
    rule = refused.reports[0]
    assert rule.outcome is Outcome.VIOLATED
    assert "max_repair_rows=5" in rule.message and "--force" in rule.message
    assert refused.exit_code == ExitCode.VIOLATIONS
    assert [row[2] for row in dump(engine)[1]] == [-5] * 6
    forced = run(engine, repair=True, force=True, **limited)
    assert forced.reports[0].outcome is Outcome.REPAIRED
    assert [row[2] for row in dump(engine)[1]] == [0] * 6


def test_per_run_limit_counts_across_rules(engine):
    seed(engine, [(1, -5), (2, -5)], unnamed=[1, 2])
    report = run(engine, repair=True, overrides={"max_repair_rows_per_run": 3}, **LEDGER)
    outcomes = {r.rule_id: r.outcome for r in report.reports}
    assert outcomes == {
        "ledger.balance_not_negative": Outcome.REPAIRED,
        "ledger.owner_named": Outcome.VIOLATED,
    }


def test_table_without_primary_key_is_refused(engine):
    metadata = MetaData()
    loose = Table("loose", metadata, Column("owner_id", Integer), Column("n", Integer))

    @invariant("loose.positive", scope_key="owner_id")
    def positive():
        """n is positive."""
        return select(loose.c.owner_id, loose.c.n).where(loose.c.n < 0)

    @positive.repair
    def fix(violations):
        return update(loose).where(loose.c.n < 0).values(n=0)

    import types

    module = types.ModuleType("looserules")
    module.positive = positive
    with engine.begin() as conn:
        metadata.create_all(conn)
        conn.execute(insert(loose), [{"owner_id": 1, "n": -1}])
    report = run(engine, repair=True, plugins=[module], **ISOLATED)
    assert report.reports[0].outcome is Outcome.ERROR
    assert "no primary key" in report.reports[0].message
    with engine.connect() as conn:
        assert conn.execute(select(loose.c.n)).scalar() == -1


def test_history_records_runs_and_restores(engine):
    seed(engine, [(1, -5)])
    checked = run(engine, **LEDGER)
    repaired = run(engine, repair=True, **LEDGER)
    restore_run(engine, repaired.run_id)
    with engine.connect() as conn:
        rows = conn.execute(select(runs.c.run_id, runs.c.repair, runs.c.restores)).all()
    ids = {r.run_id: r for r in rows}
    assert checked.run_id in ids and repaired.run_id in ids
    assert any(r.restores == repaired.run_id for r in rows)


@contextlib.contextmanager
def lock_held(engine):
    """Another repairer holding the repair lock (in a thread) for the block's duration."""
    holding, release = threading.Event(), threading.Event()

    def hold():
        with engine.connect() as conn, repair_transaction(conn, 5):
            holding.set()
            release.wait(20)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        yield
    finally:
        release.set()
        holder.join()


def test_second_repairer_waits_then_gives_up(engine):
    seed(engine, [(1, 1)])
    with lock_held(engine):
        clock = time.perf_counter()
        with (
            pytest.raises(LockTimeout) as caught,
            engine.connect() as conn,
            repair_transaction(conn, 0.5),
        ):
            pass
        assert caught.value.exit_code == ExitCode.LOCKED
        assert 0.4 < time.perf_counter() - clock < 10
    with engine.connect() as conn, repair_transaction(conn, 1):
        pass  # free again once the holder is done


def test_check_only_runs_take_no_lock(engine):
    seed(engine, [(1, -1)])
    with lock_held(engine):
        clock = time.perf_counter()
        report = run(engine, history=False, **LEDGER)  # history is a write; the check is not
        assert time.perf_counter() - clock < 4
        assert report.reports[0].count == 1


def test_restore_puts_deleted_rows_back(engine):
    accounts = ledger_rules.accounts

    @invariant("purge.no_negative_accounts", scope_key="owner_id")
    def no_negative_accounts():
        """No account is negative (this repair deletes them)."""
        return select(accounts.c.id, accounts.c.owner_id).where(accounts.c.balance < 0)

    @no_negative_accounts.repair
    def delete_them(violations):
        return delete(accounts).where(accounts.c.id.in_(select(violations.c.id)))

    import types

    module = types.ModuleType("purgerules")
    module.no_negative_accounts = no_negative_accounts
    seed(engine, [(1, -5), (2, 3), (3, -1)])
    before = dump(engine)
    report = run(engine, repair=True, plugins=[module], **ISOLATED)
    assert report.reports[0].outcome is Outcome.REPAIRED
    assert report.reports[0].repair.statements[0].rowcount == 2
    assert [row[2] for row in dump(engine)[1]] == [3]
    restore_run(engine, report.run_id)
    assert dump(engine) == before
