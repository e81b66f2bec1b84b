"""Demo data: a billing database with the drift the original system suffered from."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.engine import Connection

from invariants_billing.models import Base, Payment, Profile, Subscription, User

__all__ = ["drop", "populate"]

CHUNK = 5000


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
    for batch in _chunks(rows):
        conn.execute(insert(model), batch)


def drop(conn: Connection) -> None:
    """Drop the billing tables."""
    Base.metadata.drop_all(conn)


def populate(
    conn: Connection, *, users: int = 3000, seed: int = 2024, now: datetime
) -> dict[str, int]:
    """Create the billing tables and fill them; return how much drift of each kind was made.

    Deterministic for a seed: healthy users first, then each kind of drift on a random
    few percent of them, keyed by the rule id it breaks.
    """
    rng = random.Random(seed)
    now = now.replace(microsecond=0)
    Base.metadata.create_all(conn)
    drift = dict.fromkeys(
        (
            "billing.profile_exists",
            "billing.subscription_not_active_past_expiry",
            "billing.premium_has_active_subscription",
            "billing.active_subscription_grants_premium",
            "billing.premium_until_matches_subscriptions",
            "billing.approved_payment_has_subscription",
        ),
        0,
    )
    user_rows, profile_rows, sub_rows, payment_rows = [], [], [], []
    sub_id = 0
    for uid in range(1, users + 1):
        created = now - timedelta(days=rng.randint(30, 1500), seconds=rng.randint(0, 86399))
        user_rows.append({"id": uid, "email": f"user{uid}@example.com", "created_at": created})
        subs = []
        if rng.random() < 0.6:
            for _ in range(1 if rng.random() < 0.85 else 2):
                sub_id += 1
                active = rng.random() < 0.8
                expires = (
                    now + timedelta(days=rng.randint(1, 365))
                    if active
                    else (now - timedelta(days=rng.randint(1, 400)))
                )
                stale = active is False and rng.random() < 0.1  # expired, still marked active
                subs.append(
                    {
                        "id": sub_id,
                        "user_id": uid,
                        "status": "active" if active or stale else "expired",
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
            orphan = rng.random() < 0.015
            payment_rows.append(
                {
                    "user_id": uid,
                    "subscription_id": None if orphan else sub["id"],
                    "status": "approved",
                    "amount": Decimal(rng.choice(("9.90", "27.00", "99.00"))),
                    "created_at": sub["starts_at"],
                }
            )
            drift["billing.approved_payment_has_subscription"] += orphan
        if rng.random() < 0.03:
            drift["billing.profile_exists"] += 1
            continue
        granting = [s["expires_at"] for s in subs if s["expires_at"] > now]
        stale_premium = [s["expires_at"] for s in subs if s["status"] == "active"]
        profile = {
            "user_id": uid,
            "is_premium": bool(granting),
            "premium_until": max(granting) if granting else None,
        }
        if not granting and stale_premium:
            profile.update(is_premium=True, premium_until=max(stale_premium))
            drift["billing.premium_has_active_subscription"] += 1
        elif granting and rng.random() < 0.05:
            profile.update(is_premium=False, premium_until=None)  # premium lost after a deploy
            drift["billing.active_subscription_grants_premium"] += 1
        elif granting and rng.random() < 0.03:
            profile["premium_until"] = max(granting) - timedelta(days=rng.randint(1, 30))
            drift["billing.premium_until_matches_subscriptions"] += 1
        elif not subs and rng.random() < 0.015:
            profile.update(is_premium=True, premium_until=now + timedelta(days=30))
            drift["billing.premium_has_active_subscription"] += 1
        profile_rows.append(profile)
    _insert(conn, User, user_rows)
    _insert(conn, Subscription, sub_rows)
    _insert(conn, Profile, profile_rows)
    _insert(conn, Payment, payment_rows)
    if conn.dialect.name == "postgresql":
        for table in ("users", "subscriptions"):
            conn.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT coalesce(max(id), 1) FROM {table}))"
                )
            )
    return drift
