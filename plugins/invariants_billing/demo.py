"""Demo data: a billing database with the drift the original system suffered from."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.engine import Connection, Engine

from invariants_billing.models import Base, Payment, Profile, Subscription, User
from invariants_billing.rules import RULE_IDS

__all__ = ["drop", "populate"]

CHUNK = 5000
PRICES = ("9.90", "27.00", "99.00")
# Drift rates, as a share of the population each applies to (comments: share of all users).
NO_PROFILE = 0.03  # of users: ~3%
STALE_ACTIVE = 0.10  # of lapsed subscriptions (~20% of them): ~2% of subscriptions
PREMIUM_LOST = 0.08  # of users an active subscription backs (~half): ~4%
UNTIL_OFF = 0.045  # of the backed users left healthy: ~2%
PREMIUM_FOR_NOTHING = 0.025  # of users without any subscription (~40%): ~1%
ORPHAN_PAYMENT = 0.01  # of approved payments: ~1%


def _chunks(rows: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


def _insert(conn: Connection, model: type[Base], rows: Iterable[dict[str, Any]]) -> None:
    """Insert as executemany batches of CHUNK rows: one round trip per batch, not per row."""
    for batch in _chunks(rows):
        conn.execute(insert(model), batch)


def drop(conn: Connection | Engine) -> None:
    """Drop the four billing tables (children first)."""
    Base.metadata.drop_all(conn)


def populate(
    conn_or_engine: Connection | Engine, *, users: int = 3000, seed: int = 2024, now: datetime
) -> dict[str, int]:
    """Create the billing tables and fill them; return how much drift of each kind was made.

    Deterministic for a seed: mostly healthy users, then each kind of drift on a few percent
    of them, counted under the id of the rule it breaks (each count is exactly what that
    rule's check finds at ``now``). Given an Engine, it runs in a transaction of its own.
    """
    if isinstance(conn_or_engine, Engine):
        with conn_or_engine.begin() as conn:
            return _populate(conn, users=users, seed=seed, now=now)
    return _populate(conn_or_engine, users=users, seed=seed, now=now)


def _populate(conn: Connection, *, users: int, seed: int, now: datetime) -> dict[str, int]:
    rng = random.Random(seed)
    now = now.replace(microsecond=0)  # MariaDB's DATETIME keeps whole seconds only
    Base.metadata.create_all(conn)
    drift = dict.fromkeys(RULE_IDS, 0)
    user_rows: list[dict[str, Any]] = []
    profile_rows: list[dict[str, Any]] = []
    sub_rows: list[dict[str, Any]] = []
    payment_rows: list[dict[str, Any]] = []
    sub_id = 0
    for uid in range(1, users + 1):
        created = now - timedelta(days=rng.randint(30, 1500), seconds=rng.randint(0, 86399))
        user_rows.append({"id": uid, "email": f"user{uid}@example.com", "created_at": created})
        subs: list[dict[str, Any]] = []
        if rng.random() < 0.6:
            for _ in range(1 if rng.random() < 0.85 else 2):
                sub_id += 1
                current = rng.random() < 0.8
                expires = (
                    now + timedelta(days=rng.randint(1, 365))
                    if current
                    else now - timedelta(days=rng.randint(1, 400))
                )
                stale = not current and rng.random() < STALE_ACTIVE  # lapsed, still 'active'
                lapsed = "cancelled" if rng.random() < 0.3 else "expired"
                subs.append(
                    {
                        "id": sub_id,
                        "user_id": uid,
                        "status": "active" if current or stale else lapsed,
                        "starts_at": min(
                            expires - timedelta(days=30 * rng.choice((1, 3, 12))),
                            now - timedelta(days=rng.randint(1, 29)),
                        ),
                        "expires_at": expires,
                    }
                )
                drift["billing.subscription_not_active_past_expiry"] += stale
        sub_rows += subs
        for sub in subs:
            amount = Decimal(rng.choice(PRICES))
            if rng.random() < 0.08:  # a card refused first, then paid
                payment_rows.append(_payment(uid, None, "refused", amount, sub["starts_at"]))
            orphan = rng.random() < ORPHAN_PAYMENT
            sub_ref = None if orphan else sub["id"]
            payment_rows.append(_payment(uid, sub_ref, "approved", amount, sub["starts_at"]))
            drift["billing.approved_payment_has_subscription"] += orphan
        if rng.random() < 0.02:  # a checkout in progress
            payment_rows.append(_payment(uid, None, "pending", Decimal(PRICES[0]), now))
        if rng.random() < NO_PROFILE:
            drift["billing.profile_exists"] += 1
            continue
        still_active = [s["expires_at"] for s in subs if s["status"] == "active"]
        backing = [expires for expires in still_active if expires > now]
        profile = {
            "user_id": uid,
            "is_premium": bool(backing),
            "premium_until": max(backing) if backing else None,
        }
        if not backing and still_active:
            # the original system kept premium while the lapsed subscription looked active
            profile.update(is_premium=True, premium_until=max(still_active))
            drift["billing.premium_has_active_subscription"] += 1
        elif backing and rng.random() < PREMIUM_LOST:
            profile.update(is_premium=False, premium_until=None)  # premium lost after a deploy
            drift["billing.active_subscription_grants_premium"] += 1
        elif backing and rng.random() < UNTIL_OFF:
            profile["premium_until"] = max(backing) - timedelta(days=rng.randint(1, 30))
            drift["billing.premium_until_matches_subscriptions"] += 1
        elif not subs and rng.random() < PREMIUM_FOR_NOTHING:
            profile.update(is_premium=True, premium_until=now + timedelta(days=30))
            drift["billing.premium_has_active_subscription"] += 1
        profile_rows.append(profile)
    _insert(conn, User, user_rows)
    _insert(conn, Subscription, sub_rows)
    _insert(conn, Profile, profile_rows)
    _insert(conn, Payment, payment_rows)
    if conn.dialect.name == "postgresql":
        # explicit ids do not advance PostgreSQL sequences; later inserts would collide
        for table in ("users", "subscriptions"):
            conn.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT coalesce(max(id), 1) FROM {table}))"
                )
            )
    return drift


def _payment(
    user_id: int, subscription_id: int | None, status: str, amount: Decimal, at: datetime
) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "subscription_id": subscription_id,
        "status": status,
        "amount": amount,
        "created_at": at,
    }
