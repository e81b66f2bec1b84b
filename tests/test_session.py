"""The runner pipeline on every dialect: counts, samples, scope, repair, errors, timeouts."""

from __future__ import annotations

import time

import ledger_rules
from sqlalchemy import create_engine, event, func, select, text

from invariants import ExitCode, Outcome, invariant, run
from invariants.database import enable_sqlite_transactions

ISOLATED = {"entrypoints": False, "discover": False, "environ": {}}


def make_engine(url: str):
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        enable_sqlite_transactions(engine)
    return engine


def seed(engine, balances):
    with engine.begin() as conn:
        ledger_rules.setup(conn, balances)


def by_id(report):
    return {r.rule_id: r for r in report.reports}


def test_counts_all_and_samples_a_few(engine):
    seed(engine, [(1, -5)] * 25 + [(2, 10)] * 5)
    report = run(engine, plugins=["ledger_rules"], select=["ledger.balance*"], **ISOLATED)
    rule = by_id(report)["ledger.balance_not_negative"]
    assert rule.outcome is Outcome.VIOLATED
    assert rule.count == 25
    assert len(rule.sample) == 10
    assert {row["balance"] for row in rule.sample} == {-5}
    assert report.exit_code == ExitCode.VIOLATIONS


def test_sample_size_comes_from_settings(engine):
    seed(engine, [(1, -1)] * 4)
    report = run(
        engine,
        plugins=["ledger_rules"],
        select=["ledger.balance*"],
        overrides={"sample": 2},
        **ISOLATED,
    )
    assert len(report.reports[0].sample) == 2
    assert report.reports[0].count == 4


def test_all_hold_exits_zero(engine):
    seed(engine, [(1, 3), (2, 0)])
    report = run(
        engine, plugins=["ledger_rules"], select=["ledger.balance*", "ledger.owner*"], **ISOLATED
    )
    assert [r.outcome for r in report.reports] == [Outcome.HELD, Outcome.HELD]
    assert report.exit_code == ExitCode.OK


def test_scope_filters_in_sql(engine):
    seed(engine, [(1, -5), (1, -6), (2, -7), (3, 4)])
    statements: list[str] = []
    event.listen(
        engine,
        "before_cursor_execute",
        lambda conn, cur, stmt, params, ctx, many: statements.append(stmt),
    )
    report = run(
        engine, plugins=["ledger_rules"], scope="owner_id=1", select=["ledger.balance*"], **ISOLATED
    )
    rule = report.reports[0]
    assert rule.count == 2
    assert {row["owner_id"] for row in rule.sample} == {1}
    checks = [s for s in statements if "accounts" in s and "balance <" in s]
    assert checks and all("owner_id =" in " ".join(s.split()) for s in checks)


def test_scope_skips_rules_without_that_key(engine):
    seed(engine, [(1, -5)])

    report = run(
        engine,
        plugins=["ledger_rules", "broken_rules"],
        scope="owner_id=1",
        select=["ledger.*"],
        **ISOLATED,
    )
    assert all(r.outcome is not Outcome.SKIPPED for r in report.reports)


def test_repair_then_recheck_holds(engine):
    seed(engine, [(1, -5), (2, -1), (3, 8)])
    report = run(
        engine, plugins=["ledger_rules"], select=["ledger.balance*"], repair=True, **ISOLATED
    )
    rule = report.reports[0]
    assert rule.outcome is Outcome.REPAIRED
    assert rule.repair.rows_changed == 2
    assert rule.repair.remaining == 0
    assert report.exit_code == ExitCode.OK
    with engine.connect() as conn:
        balances = (
            conn.execute(
                select(ledger_rules.accounts.c.balance).order_by(ledger_rules.accounts.c.id)
            )
            .scalars()
            .all()
        )
    assert balances == [0, 0, 8]


def test_scoped_repair_touches_only_that_entity(engine):
    seed(engine, [(1, -5), (2, -1)])
    run(
        engine,
        plugins=["ledger_rules"],
        select=["ledger.balance*"],
        repair=True,
        scope="owner_id=2",
        **ISOLATED,
    )
    with engine.connect() as conn:
        rows = conn.execute(
            select(ledger_rules.accounts.c.owner_id, ledger_rules.accounts.c.balance).order_by(
                ledger_rules.accounts.c.owner_id
            )
        ).all()
    assert [tuple(r) for r in rows] == [(1, -5), (2, 0)]


def test_failed_repair_rolls_back_only_its_rule(engine):
    seed(engine, [(1, -5), (2, 7)])
    report = run(
        engine,
        plugins=["ledger_rules", "broken_rules"],
        select=["broken.repair_does_not_fix", "ledger.owner_named"],
        repair=True,
        **ISOLATED,
    )
    broken = by_id(report)["broken.repair_does_not_fix"]
    assert broken.outcome is Outcome.ERROR
    assert "did not restore" in broken.message
    with engine.connect() as conn:
        assert conn.execute(select(func.sum(ledger_rules.accounts.c.balance))).scalar() == 2
    assert report.exit_code == ExitCode.VIOLATIONS


def test_a_raising_rule_is_an_error_and_the_run_goes_on(engine):
    seed(engine, [(1, -5)])
    report = run(
        engine,
        plugins=["ledger_rules", "broken_rules"],
        select=["broken.raises", "broken.bad_sql", "ledger.balance*"],
        **ISOLATED,
    )
    outcomes = {r.rule_id: r.outcome for r in report.reports}
    assert outcomes == {
        "broken.raises": Outcome.ERROR,
        "broken.bad_sql": Outcome.ERROR,
        "ledger.balance_not_negative": Outcome.VIOLATED,
    }
    raised = by_id(report)["broken.raises"]
    assert "RuntimeError: bug in the check" in raised.message
    assert "Traceback" in raised.longrepr


def test_a_raising_rule_during_repair_does_not_poison_the_transaction(engine):
    seed(engine, [(1, -5)])
    report = run(
        engine,
        plugins=["ledger_rules", "broken_rules"],
        select=["broken.bad_sql", "ledger.balance*"],
        repair=True,
        **ISOLATED,
    )
    outcomes = {r.rule_id: r.outcome for r in report.reports}
    assert outcomes["ledger.balance_not_negative"] is Outcome.REPAIRED


def test_python_path_rule_counts_and_samples(engine):
    seed(engine, [(1, 0)] * 30)
    report = run(engine, plugins=["ledger_rules"], select=["ledger.even_ids_python"], **ISOLATED)
    rule = report.reports[0]
    assert rule.count == 15
    assert len(rule.sample) == 10
    assert report.exit_code == ExitCode.OK  # info never fails the run by default


def test_fail_on_warning_fails_on_warnings(engine):
    seed(engine, [(1, 2)])
    with engine.begin() as conn:
        conn.execute(ledger_rules.owners.update().values(name=None))
    kwargs = {"plugins": ["ledger_rules"], "select": ["ledger.owner_named"], **ISOLATED}
    assert run(engine, **kwargs).exit_code == ExitCode.OK
    failing = run(engine, overrides={"fail_on": "warning"}, **kwargs)
    assert failing.exit_code == ExitCode.VIOLATIONS


def test_missing_tables_skip_and_nothing_run_is_exit_five(engine):
    report = run(engine, plugins=["ledger_rules"], select=["ledger.balance*"], **ISOLATED)
    assert report.reports[0].outcome is Outcome.SKIPPED
    assert "accounts" in report.reports[0].message
    assert report.exit_code == ExitCode.NO_RULES


SLOW = (
    "(WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 200000000) "
    "SELECT n FROM c) AS big"
)


@invariant("slow.forever", scope_key="owner_id", statement_timeout=0.5)
def forever(dialect):
    """A check that would run for minutes."""
    if dialect == "mysql":  # MariaDB caps recursion; its sequence engine makes rows instead
        return select(text("seq AS owner_id")).select_from(text("seq_1_to_1000000000"))
    return select(text("n AS owner_id")).select_from(text(SLOW))


def test_statement_timeout_stops_a_runaway_check(engine):
    import sys

    module = sys.modules[__name__]
    clock = time.perf_counter()
    report = run(engine, plugins=[module], select=["slow.forever"], **ISOLATED)
    elapsed = time.perf_counter() - clock
    rule = report.reports[0]
    assert rule.outcome is Outcome.ERROR
    assert "timeout" in rule.message.lower() or "interrupt" in rule.message.lower()
    assert elapsed < 30


def test_workers_check_rules_in_parallel_with_the_same_results(engine):
    seed(engine, [(1, -5), (2, -1), (3, 0), (4, 0)])
    with engine.begin() as conn:
        conn.execute(
            ledger_rules.owners.update().where(ledger_rules.owners.c.id == 4).values(name=None)
        )
    serial = run(engine, plugins=["ledger_rules"], history=False, **ISOLATED)
    parallel = run(engine, plugins=["ledger_rules"], history=False, workers=3, **ISOLATED)
    summary = sorted((r.rule_id, r.outcome, r.count) for r in serial.reports)
    assert sorted((r.rule_id, r.outcome, r.count) for r in parallel.reports) == summary
    assert {r.outcome for r in serial.reports} == {Outcome.VIOLATED}
