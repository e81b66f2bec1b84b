"""The billing plugin on every dialect: each rule's check and repair, the demo, and a property."""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from invariants_billing import Base, Payment, Profile, Subscription, User, populate
from invariants_billing.rules import RULE_IDS
from sqlalchemy import create_engine, insert, select

from invariants import ExitCode, Outcome, run
from invariants.database import enable_sqlite_transactions
from invariants.restore import restore_run

NOW = datetime(2026, 6, 1, 12, 0, 0)
DAY = timedelta(days=1)
ISOLATED = {
    "plugins": ["invariants_billing"],
    "entrypoints": False,
    "discover": False,
    "environ": {},
}
RULES = RULE_IDS


def build(conn, users):
    """Insert users described as dicts: profile (None or (is_premium, until)), subs, payments."""
    Base.metadata.create_all(conn)
    sub_id = 0
    for uid, spec in enumerate(users, 1):
        conn.execute(
            insert(User),
            [{"id": uid, "email": f"u{uid}@example.org", "created_at": NOW - 100 * DAY}],
        )
        for status, expires in spec.get("subs", ()):
            sub_id += 1
            conn.execute(
                insert(Subscription),
                [
                    {
                        "id": sub_id,
                        "user_id": uid,
                        "status": status,
                        "starts_at": expires - 30 * DAY,
                        "expires_at": expires,
                    }
                ],
            )
        for linked in spec.get("payments", ()):
            conn.execute(
                insert(Payment),
                [
                    {
                        "user_id": uid,
                        "subscription_id": sub_id if linked else None,
                        "status": "approved",
                        "amount": Decimal("9.90"),
                        "created_at": NOW - DAY,
                    }
                ],
            )
        if spec.get("profile", (False, None)) is not None:
            premium, until = spec.get("profile", (False, None))
            conn.execute(
                insert(Profile), [{"user_id": uid, "is_premium": premium, "premium_until": until}]
            )


def state(engine):
    with engine.connect() as conn:
        return {
            model.__tablename__: [
                tuple(row) for row in conn.execute(select(model.__table__).order_by("id"))
            ]
            for model in (User, Profile, Subscription, Payment)
        }


HEALTHY = {
    "profile": (True, NOW + 30 * DAY),
    "subs": [("active", NOW + 30 * DAY)],
    "payments": [True],
}
FREE = {"profile": (False, None)}

CASES = {
    "billing.profile_exists": [{"profile": None}, FREE, {"profile": None}],
    "billing.subscription_not_active_past_expiry": [
        {"profile": (False, None), "subs": [("active", NOW - DAY)]},
        HEALTHY,
    ],
    "billing.premium_has_active_subscription": [
        {"profile": (True, NOW + 9 * DAY)},
        {"profile": (True, NOW - DAY), "subs": [("expired", NOW - DAY)]},
        HEALTHY,
    ],
    "billing.active_subscription_grants_premium": [
        {"profile": (False, None), "subs": [("active", NOW + 5 * DAY), ("active", NOW + 9 * DAY)]},
        HEALTHY,
    ],
    "billing.premium_until_matches_subscriptions": [
        {"profile": (True, NOW + 2 * DAY), "subs": [("active", NOW + 40 * DAY)]},
        {"profile": (True, None), "subs": [("active", NOW + 40 * DAY)]},
        HEALTHY,
    ],
    "billing.approved_payment_has_subscription": [
        {
            "profile": (True, NOW + 30 * DAY),
            "subs": [("active", NOW + 30 * DAY)],
            "payments": [False, True],
        },
        HEALTHY,
    ],
}
EXPECTED = {
    "billing.profile_exists": 2,
    "billing.subscription_not_active_past_expiry": 1,
    "billing.premium_has_active_subscription": 2,
    "billing.active_subscription_grants_premium": 1,
    "billing.premium_until_matches_subscriptions": 2,
    "billing.approved_payment_has_subscription": 1,
}


@pytest.mark.parametrize("rule_id", RULES)
def test_each_rule_finds_its_violations_and_its_repair_restores_it(engine, rule_id):
    with engine.begin() as conn:
        build(conn, CASES[rule_id])
    checked = run(engine, select=[rule_id], now=NOW, history=False, **ISOLATED)
    report = checked.reports[0]
    assert (report.outcome, report.count) == (Outcome.VIOLATED, EXPECTED[rule_id])
    assert all("email" not in row for row in report.sample)
    healthy_before = [row for row in state(engine)["users"]]
    repaired = run(engine, select=[rule_id], now=NOW, repair=True, **ISOLATED)
    assert repaired.reports[0].outcome is Outcome.REPAIRED, repaired.reports[0].message
    assert run(engine, select=[rule_id], now=NOW, history=False, **ISOLATED).exit_code == 0
    assert state(engine)["users"] == healthy_before


def test_repairs_set_the_premium_fields_from_the_subscriptions(engine):
    with engine.begin() as conn:
        build(
            conn,
            [
                {
                    "profile": (False, None),
                    "subs": [("active", NOW + 5 * DAY), ("active", NOW + 9 * DAY)],
                },
                {"profile": None, "subs": [("active", NOW + 3 * DAY)]},
                {"profile": (True, NOW + 50 * DAY), "subs": [("active", NOW - DAY)]},
            ],
        )
    report = run(engine, now=NOW, repair=True, **ISOLATED)
    assert report.exit_code == ExitCode.OK
    profiles = {row[1]: row[2:] for row in state(engine)["profiles"]}
    assert profiles[1] == (True, NOW + 9 * DAY)
    assert profiles[2] == (True, NOW + 3 * DAY)  # created, then granted, in dependency order
    assert profiles[3] == (False, None)
    assert state(engine)["subscriptions"][3][2] == "expired"


def test_a_payment_with_no_subscription_to_link_is_an_error(engine):
    with engine.begin() as conn:
        build(conn, [{"profile": (False, None), "payments": [False]}])
    report = run(
        engine,
        select=["billing.approved_payment_has_subscription"],
        now=NOW,
        repair=True,
        **ISOLATED,
    )
    assert report.reports[0].outcome is Outcome.ERROR
    assert "did not restore" in report.reports[0].message


def test_scope_checks_one_user_only(engine):
    with engine.begin() as conn:
        build(conn, [{"profile": None}, {"profile": None}, FREE])
    scoped = run(engine, select=["billing.profile_exists"], scope="user_id=2", now=NOW, **ISOLATED)
    assert scoped.reports[0].count == 1
    assert scoped.reports[0].sample[0]["user_id"] == 2
    assert "WHERE profiles.id IS NULL AND users.id = 2" in " ".join(scoped.reports[0].sql.split())


def test_demo_data_repairs_fully_and_restores_exactly(engine):
    with engine.begin() as conn:
        drift = populate(conn, users=400, now=NOW)
    assert all(n > 0 for n in drift.values()), drift
    before = state(engine)
    checked = run(engine, now=NOW, **ISOLATED)
    assert {r.outcome for r in checked.reports} == {Outcome.VIOLATED}
    assert len(checked.reports) == 6
    repaired = run(engine, now=NOW, repair=True, **ISOLATED)
    assert repaired.exit_code == ExitCode.OK, [(r.rule_id, r.message) for r in repaired.reports]
    assert run(engine, now=NOW, **ISOLATED).exit_code == ExitCode.OK
    restore_run(engine, repaired.run_id)
    assert state(engine) == before


SUBS = st.lists(
    st.tuples(st.sampled_from(["active", "expired", "cancelled"]), st.integers(-40, 40)), max_size=3
)
USER = st.fixed_dictionaries(
    {
        "profile": st.one_of(
            st.none(), st.tuples(st.booleans(), st.one_of(st.none(), st.integers(-40, 40)))
        ),
        "subs": SUBS,
        "payments": st.lists(st.booleans(), max_size=2),
    }
)


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(users=st.lists(USER, max_size=8))
def test_repairs_are_sound_idempotent_and_restorable(users):
    specs = []
    for user in users:
        spec = {
            "subs": [(status, NOW + days * DAY) for status, days in user["subs"]],
            # a payment can only be linked when the user has a subscription to link it to
            "payments": user["payments"] if user["subs"] else [],
            "profile": None
            if user["profile"] is None
            else (
                user["profile"][0],
                None if user["profile"][1] is None else NOW + user["profile"][1] * DAY,
            ),
        }
        specs.append(spec)
    with tempfile.TemporaryDirectory() as folder:
        engine = create_engine(f"sqlite:///{folder}/b.db")
        enable_sqlite_transactions(engine)
        with engine.begin() as conn:
            build(conn, specs)
        before = state(engine)
        repaired = run(engine, now=NOW, repair=True, **ISOLATED)
        assert repaired.exit_code == ExitCode.OK, [(r.rule_id, r.message) for r in repaired.reports]
        after = state(engine)
        again = run(engine, now=NOW, repair=True, **ISOLATED)
        assert all(r.outcome is Outcome.HELD for r in again.reports)
        assert state(engine) == after
        if any(r.repair for r in repaired.reports):
            restore_run(engine, repaired.run_id)
        assert state(engine) == before
        engine.dispose()
