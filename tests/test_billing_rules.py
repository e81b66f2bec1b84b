"""The billing rules tested on their own, without the runner: checks, repairs, demo data."""

from __future__ import annotations

import graphlib
import os
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import invariants_billing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from invariants_billing import Base, Payment, Profile, Subscription, User, drop, populate
from sqlalchemy import Executable, create_engine, event, func, insert, inspect, select, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

from invariants.rule import Rule, Severity, call_with_injection

NOW = datetime(2026, 6, 1, 12, 0, 0)
DAY = timedelta(days=1)
SERVER_URLS = {
    "postgresql": os.environ.get(
        "INVARIANTS_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    ),
    "mariadb": os.environ.get(
        "INVARIANTS_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/"
    ),
}
REQUIRE_SERVERS = os.environ.get("INVARIANTS_REQUIRE_SERVERS") == "1"
RULES: dict[str, Rule] = {
    value.id: value for value in vars(invariants_billing).values() if isinstance(value, Rule)
}
TABLES = (User, Profile, Subscription, Payment)


# --- databases ---------------------------------------------------------------------------


def _sqlite_engine() -> Engine:
    """A private in-memory SQLite database that enforces foreign keys like the servers do."""
    engine = create_engine(
        "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
    )

    @event.listens_for(engine, "connect")
    def _foreign_keys(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA foreign_keys = ON")

    return engine


@pytest.fixture(scope="module", params=("sqlite", "postgresql", "mariadb"))
def billing_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A throw-away database per dialect for this module (SQLite: the in-memory marker)."""
    if request.param == "sqlite":
        yield "sqlite://"
        return
    admin_url = SERVER_URLS[request.param]
    name = f"inv_billing_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
    except Exception as exc:
        admin.dispose()
        reason = f"{request.param} server not reachable at {admin_url}: {str(exc).splitlines()[0]}"
        if REQUIRE_SERVERS:
            pytest.fail(f"{reason} (INVARIANTS_REQUIRE_SERVERS=1: servers are required)")
        pytest.skip(reason)
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if request.param == "postgresql" else ""
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
        admin.dispose()


@pytest.fixture
def billing_engine(billing_url: str) -> Iterator[Engine]:
    """An engine on an empty billing schema of each dialect; the tables go afterwards."""
    engine = _sqlite_engine() if billing_url == "sqlite://" else create_engine(billing_url)
    Base.metadata.create_all(engine)
    yield engine
    Base.metadata.drop_all(engine)
    engine.dispose()


# --- helpers -------------------------------------------------------------------------------


def seed(
    conn: Connection,
    *,
    users: Sequence[int],
    profiles: Sequence[tuple[int, bool, datetime | None]] = (),
    subs: Sequence[tuple[int, int, str, datetime]] = (),
    payments: Sequence[tuple[int, int, int | None, str]] = (),
) -> None:
    """Insert rows given as tuples: profiles (user, premium, until), subs (id, user, status,
    expires), payments (id, user, subscription, status). Profiles get generated ids, so a
    profile a repair inserts later cannot collide with a PostgreSQL sequence."""
    conn.execute(
        insert(User),
        [{"id": u, "email": f"u{u}@example.org", "created_at": NOW - 90 * DAY} for u in users],
    )
    if subs:
        conn.execute(
            insert(Subscription),
            [
                {"id": i, "user_id": u, "status": s, "starts_at": e - 30 * DAY, "expires_at": e}
                for i, u, s, e in subs
            ],
        )
    if profiles:
        conn.execute(
            insert(Profile),
            [{"user_id": u, "is_premium": p, "premium_until": t} for u, p, t in profiles],
        )
    if payments:
        conn.execute(
            insert(Payment),
            [
                {
                    "id": i,
                    "user_id": u,
                    "subscription_id": s,
                    "status": st_,
                    "amount": Decimal("9.90"),
                    "created_at": NOW - DAY,
                }
                for i, u, s, st_ in payments
            ],
        )


def check(rule: Rule) -> Any:
    """The rule's check Select, with ``now`` injected the way the runner injects it."""
    return call_with_injection(rule.check_fn, {"now": NOW})


def violations(conn: Connection, rule: Rule) -> list[dict[str, Any]]:
    return [dict(row) for row in conn.execute(check(rule)).mappings()]


def count(conn: Connection, rule: Rule) -> int:
    query = select(func.count()).select_from(check(rule).subquery())
    return int(conn.execute(query).scalar_one())


def repair(conn: Connection, rule: Rule) -> list[int]:
    """Run the rule's repair statements; return each statement's rowcount.

    SQLAlchemy 2.x keeps an INSERT's rowcount only on request (psycopg reports -1 otherwise).
    """
    assert rule.repair_fn is not None
    planned = call_with_injection(
        rule.repair_fn, {"violations": check(rule).subquery("violations"), "now": NOW}
    )
    statements = [planned] if isinstance(planned, Executable) else list(planned)
    keep = {"preserve_rowcount": True}
    return [conn.execute(stmt, execution_options=keep).rowcount for stmt in statements]


def snapshot(conn: Connection) -> dict[str, dict[Any, tuple[Any, ...]]]:
    """Every row of the four tables; profiles keyed by user_id (their ids are generated)."""
    tables: dict[str, dict[Any, tuple[Any, ...]]] = {}
    for model in TABLES:
        rows = conn.execute(select(model.__table__)).mappings()
        key = "user_id" if model is Profile else "id"
        tables[model.__tablename__] = {
            row[key]: tuple(v for k, v in row.items() if not (model is Profile and k == "id"))
            for row in rows
        }
    return tables


def unchanged_except(
    before: Mapping[str, Mapping[Any, Any]], after: Mapping[str, Mapping[Any, Any]], **changed: set
) -> None:
    """Assert every row outside ``changed[table]`` (keys) is exactly as it was."""
    for table, rows in before.items():
        skip = changed.get(table, set())
        assert {k: v for k, v in rows.items() if k not in skip} == {
            k: v for k, v in after[table].items() if k not in skip
        }, table


def repair_order() -> list[Rule]:
    """The rules in an order where each comes after the rules it depends on."""
    graph = {rule_id: set(rule.depends_on) for rule_id, rule in RULES.items()}
    return [RULES[rule_id] for rule_id in graphlib.TopologicalSorter(graph).static_order()]


# --- the rules as declared ----------------------------------------------------------------


def test_the_package_exposes_six_rules_as_module_attributes() -> None:
    assert set(RULES) == {
        "billing.profile_exists",
        "billing.subscription_not_active_past_expiry",
        "billing.premium_has_active_subscription",
        "billing.active_subscription_grants_premium",
        "billing.premium_until_matches_subscriptions",
        "billing.approved_payment_has_subscription",
    }
    assert set(invariants_billing.__all__) >= {
        "Base",
        "User",
        "Profile",
        "Subscription",
        "Payment",
        "populate",
        *(rule.__name__ for rule in RULES.values()),
    }
    for rule in RULES.values():
        assert rule.scope_key == "user_id"
        assert "billing" in rule.tags
        assert rule.repair_fn is not None, rule.id
        assert rule.description and "\n" not in rule.description
        assert set(rule.depends_on) <= set(RULES)
    assert RULES["billing.premium_until_matches_subscriptions"].severity is Severity.WARNING
    premium = ("billing.profile_exists", "billing.subscription_not_active_past_expiry")
    assert {rule_id: rule.depends_on for rule_id, rule in RULES.items()} == {
        "billing.profile_exists": (),
        "billing.subscription_not_active_past_expiry": (),
        "billing.premium_has_active_subscription": premium,
        "billing.active_subscription_grants_premium": premium,
        "billing.premium_until_matches_subscriptions": (
            *premium,
            "billing.active_subscription_grants_premium",
        ),
        "billing.approved_payment_has_subscription": (),
    }


@pytest.mark.parametrize("rule_id", sorted(RULES))
def test_each_check_names_the_user_and_the_row_but_never_the_email(rule_id: str) -> None:
    columns = set(check(RULES[rule_id]).selected_columns.keys())
    assert "user_id" in columns
    assert "email" not in columns
    assert columns & {"id", "user_id"} and len(columns) >= 2


# --- each rule on hand-made data, every dialect -------------------------------------------


def test_profile_exists(billing_engine: Engine) -> None:
    rule = RULES["billing.profile_exists"]
    with billing_engine.begin() as conn:
        seed(
            conn,
            users=[1, 2, 3, 4],
            subs=[(1, 2, "active", NOW + 30 * DAY)],
            profiles=[(2, True, NOW + 30 * DAY), (4, False, None)],
        )
        assert count(conn, rule) == 2
        assert sorted(v["user_id"] for v in violations(conn, rule)) == [1, 3]
        before = snapshot(conn)
        assert repair(conn, rule) == [2]
        assert count(conn, rule) == 0
        after = snapshot(conn)
    assert after["profiles"][1] == (1, False, None)
    assert after["profiles"][3] == (3, False, None)
    unchanged_except(before, after, profiles={1, 3})


def test_subscription_not_active_past_expiry(billing_engine: Engine) -> None:
    rule = RULES["billing.subscription_not_active_past_expiry"]
    with billing_engine.begin() as conn:
        seed(
            conn,
            users=[1, 2, 3],
            subs=[
                (1, 1, "active", NOW - DAY),
                (2, 1, "active", NOW),  # expiring exactly now is expired
                (3, 2, "active", NOW + DAY),
                (4, 2, "expired", NOW - 5 * DAY),
                (5, 3, "cancelled", NOW - DAY),
            ],
            profiles=[(1, False, None), (2, True, NOW + DAY), (3, False, None)],
        )
        assert count(conn, rule) == 2
        assert {(v["id"], v["user_id"]) for v in violations(conn, rule)} == {(1, 1), (2, 1)}
        before = snapshot(conn)
        assert repair(conn, rule) == [2]
        assert count(conn, rule) == 0
        after = snapshot(conn)
    assert {after["subscriptions"][i][2] for i in (1, 2)} == {"expired"}
    unchanged_except(before, after, subscriptions={1, 2})


def test_premium_has_active_subscription(billing_engine: Engine) -> None:
    rule = RULES["billing.premium_has_active_subscription"]
    with billing_engine.begin() as conn:
        seed(
            conn,
            users=[1, 2, 3, 4, 5, 6],
            subs=[
                (1, 2, "expired", NOW - DAY),
                (2, 3, "active", NOW),  # lapsed this instant
                (3, 4, "active", NOW + 10 * DAY),
                (4, 6, "cancelled", NOW + 10 * DAY),  # cancelled grants nothing
            ],
            profiles=[
                (1, True, NOW + 9 * DAY),
                (2, True, NOW - DAY),
                (3, True, NOW),
                (4, True, NOW + 10 * DAY),
                (5, False, None),
                (6, True, NOW + 10 * DAY),
            ],
        )
        assert count(conn, rule) == 4
        assert sorted(v["user_id"] for v in violations(conn, rule)) == [1, 2, 3, 6]
        before = snapshot(conn)
        assert repair(conn, rule) == [4]
        assert count(conn, rule) == 0
        after = snapshot(conn)
    for user in (1, 2, 3, 6):
        assert after["profiles"][user] == (user, False, None)
    unchanged_except(before, after, profiles={1, 2, 3, 6})


def test_active_subscription_grants_premium(billing_engine: Engine) -> None:
    rule = RULES["billing.active_subscription_grants_premium"]
    with billing_engine.begin() as conn:
        seed(
            conn,
            users=[1, 2, 3, 4],
            subs=[
                (1, 1, "active", NOW + 5 * DAY),
                (2, 1, "active", NOW + 9 * DAY),
                (3, 2, "active", NOW + 3 * DAY),
                (4, 2, "active", NOW - 2 * DAY),  # lapsed: must not set the date
                (5, 3, "cancelled", NOW + 20 * DAY),
                (6, 4, "active", NOW + 30 * DAY),
            ],
            profiles=[
                (1, False, None),
                (2, False, NOW - 2 * DAY),
                (3, False, None),
                (4, True, NOW + 30 * DAY),
            ],
        )
        assert count(conn, rule) == 2
        assert sorted(v["user_id"] for v in violations(conn, rule)) == [1, 2]
        before = snapshot(conn)
        assert repair(conn, rule) == [2]
        assert count(conn, rule) == 0
        after = snapshot(conn)
    assert after["profiles"][1] == (1, True, NOW + 9 * DAY)
    assert after["profiles"][2] == (2, True, NOW + 3 * DAY)
    unchanged_except(before, after, profiles={1, 2})


def test_premium_until_matches_subscriptions(billing_engine: Engine) -> None:
    rule = RULES["billing.premium_until_matches_subscriptions"]
    with billing_engine.begin() as conn:
        seed(
            conn,
            users=[1, 2, 3, 4, 5],
            subs=[
                (1, 1, "active", NOW + 40 * DAY),
                (2, 2, "active", NOW + 40 * DAY),
                (3, 3, "active", NOW + 30 * DAY),
                (4, 3, "active", NOW + 10 * DAY),
                (5, 4, "active", NOW + 30 * DAY),
                (6, 4, "expired", NOW + 50 * DAY),  # ended early: not the latest expiry
            ],
            profiles=[
                (1, True, NOW + 2 * DAY),
                (2, True, None),  # NULL is a mismatch too
                (3, True, NOW + 30 * DAY),
                (4, True, NOW + 50 * DAY),
                (5, False, None),
            ],
        )
        assert count(conn, rule) == 3
        found = {v["user_id"]: v for v in violations(conn, rule)}
        assert sorted(found) == [1, 2, 4]
        assert found[4]["expected"] == NOW + 30 * DAY
        before = snapshot(conn)
        assert repair(conn, rule) == [3]
        assert count(conn, rule) == 0
        after = snapshot(conn)
    assert after["profiles"][1] == (1, True, NOW + 40 * DAY)
    assert after["profiles"][2] == (2, True, NOW + 40 * DAY)
    assert after["profiles"][4] == (4, True, NOW + 30 * DAY)
    unchanged_except(before, after, profiles={1, 2, 4})


def test_approved_payment_has_subscription(billing_engine: Engine) -> None:
    rule = RULES["billing.approved_payment_has_subscription"]
    with billing_engine.begin() as conn:
        seed(
            conn,
            users=[1, 2, 3],
            subs=[
                (1, 1, "active", NOW + 30 * DAY),
                (2, 1, "expired", NOW - 10 * DAY),
                (3, 2, "expired", NOW - 10 * DAY),
                (4, 2, "cancelled", NOW - 10 * DAY),  # same expiry: the higher id wins
            ],
            profiles=[(1, True, NOW + 30 * DAY), (2, False, None), (3, False, None)],
            payments=[
                (1, 1, None, "approved"),
                (2, 1, 2, "approved"),
                (3, 1, None, "pending"),
                (4, 1, None, "refused"),
                (5, 2, None, "approved"),
                (6, 3, None, "approved"),  # no subscription to link: stays flagged
            ],
        )
        assert count(conn, rule) == 3
        assert sorted(v["id"] for v in violations(conn, rule)) == [1, 5, 6]
        before = snapshot(conn)
        assert repair(conn, rule) == [2]
        assert [v["id"] for v in violations(conn, rule)] == [6]
        after = snapshot(conn)
        assert repair(conn, rule) == [0]  # the unlinkable payment is left alone
    assert after["payments"][1][2] == 1
    assert after["payments"][5][2] == 4
    unchanged_except(before, after, payments={1, 5})


@pytest.mark.parametrize("rule_id", sorted(RULES))
def test_a_repair_on_healthy_data_changes_nothing(billing_engine: Engine, rule_id: str) -> None:
    with billing_engine.begin() as conn:
        seed(
            conn,
            users=[1, 2],
            subs=[(1, 1, "active", NOW + 30 * DAY), (2, 2, "expired", NOW - DAY)],
            profiles=[(1, True, NOW + 30 * DAY), (2, False, None)],
            payments=[(1, 1, 1, "approved"), (2, 2, 2, "approved"), (3, 2, None, "refused")],
        )
        before = snapshot(conn)
        assert count(conn, RULES[rule_id]) == 0
        assert all(n == 0 for n in repair(conn, RULES[rule_id]))
        assert snapshot(conn) == before


# --- demo data ----------------------------------------------------------------------------


def test_populate_makes_every_kind_of_drift_that_the_checks_count(billing_engine: Engine) -> None:
    drift = populate(billing_engine, users=600, now=NOW)
    assert set(drift) == set(RULES)
    assert all(n > 0 for n in drift.values()), drift
    with billing_engine.begin() as conn:
        assert {rule_id: count(conn, rule) for rule_id, rule in RULES.items()} == drift
        assert conn.execute(select(func.count()).select_from(User)).scalar_one() == 600
        for rule in repair_order():
            repair(conn, rule)
        assert {rule_id: count(conn, rule) for rule_id, rule in RULES.items()} == dict.fromkeys(
            RULES, 0
        )
        drop(conn)
        assert not set(inspect(conn).get_table_names()) & {m.__tablename__ for m in TABLES}
    Base.metadata.create_all(billing_engine)  # for the fixture's teardown


def test_populate_is_deterministic_fast_and_near_the_documented_rates() -> None:
    engines = [_sqlite_engine(), _sqlite_engine()]
    started = time.perf_counter()
    with engines[0].begin() as conn:
        drift = populate(conn, users=3000, now=NOW)
    elapsed = time.perf_counter() - started
    assert populate(engines[1], users=3000, now=NOW) == drift
    with engines[0].connect() as a, engines[1].connect() as b:
        assert snapshot(a) == snapshot(b)
        payments = a.execute(select(func.count()).where(Payment.status == "approved")).scalar()
    assert elapsed < 2.0, f"populate took {elapsed:.2f}s for 3000 users"
    share = {rule_id: n / 3000 for rule_id, n in drift.items()}
    assert 0.015 <= share["billing.profile_exists"] <= 0.045
    assert 0.025 <= share["billing.active_subscription_grants_premium"] <= 0.055
    assert 0.01 <= share["billing.premium_until_matches_subscriptions"] <= 0.03
    assert 0.003 <= drift["billing.approved_payment_has_subscription"] / payments <= 0.02
    for engine in engines:
        engine.dispose()


# --- property: repairs in dependency order restore every invariant, once -----------------

EXPIRY = st.integers(-3, 3).map(lambda days: NOW + days * DAY)  # few values: ties and "== now"
USER = st.fixed_dictionaries(
    {
        "profile": st.none() | st.tuples(st.booleans(), st.none() | EXPIRY),
        "subs": st.lists(
            st.tuples(st.sampled_from(["active", "expired", "cancelled"]), EXPIRY), max_size=3
        ),
        "payments": st.lists(
            st.tuples(
                st.sampled_from(["approved", "pending", "refused"]), st.none() | st.integers(0, 2)
            ),
            max_size=3,
        ),
    }
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(people=st.lists(USER, max_size=7))
def test_repairs_restore_every_invariant_and_are_idempotent(people: list[dict[str, Any]]) -> None:
    users, profiles, subs, payments = [], [], [], []
    unlinkable = set()  # approved, unlinked payments of users without any subscription
    for uid, person in enumerate(people, 1):
        users.append(uid)
        first_sub = len(subs) + 1
        subs += [
            (sub_id, uid, status, expires)
            for sub_id, (status, expires) in enumerate(person["subs"], first_sub)
        ]
        if person["profile"] is not None:
            profiles.append((uid, *person["profile"]))
        for status, which in person["payments"]:
            link = (
                None
                if which is None or not person["subs"]
                else first_sub + which % len(person["subs"])
            )
            payments.append((len(payments) + 1, uid, link, status))
            if status == "approved" and link is None and not person["subs"]:
                unlinkable.add(len(payments))
    engine = _sqlite_engine()
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        if users:
            seed(conn, users=users, profiles=profiles, subs=subs, payments=payments)
        for rule in repair_order():
            repair(conn, rule)
        for rule_id, rule in RULES.items():
            left = {v["id"] if "id" in v else v["user_id"] for v in violations(conn, rule)}
            payments_rule = rule_id == "billing.approved_payment_has_subscription"
            assert left == (unlinkable if payments_rule else set()), rule_id
        repaired = snapshot(conn)
        for rule in repair_order():
            assert all(n == 0 for n in repair(conn, rule)), rule.id
        assert snapshot(conn) == repaired
    engine.dispose()
