"""One measurement in a process of its own, so its peak memory is its own: prints JSON."""

from __future__ import annotations

import json
import random
import resource
import statistics
import sys
import time
from typing import Any

from invariants_billing.models import Payment, Profile, Subscription, User
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from benchmarks.generate import NOW
from benchmarks.handwritten import CHECKS, REPAIRS
from invariants import configure, run
from invariants.database import engine_from_url

PARAMS = {"now": NOW, "yes": True, "no": False}
ISOLATED = {
    "plugins": ["invariants_billing"],
    "entrypoints": False,
    "discover": False,
    "environ": {},
}


def check(url: str, users: int) -> dict[str, Any]:
    """invariants, check only: count and sample of every rule."""
    engine = engine_from_url(url)
    clock = time.perf_counter()
    report = run(engine, now=NOW, history=False, **ISOLATED)
    seconds = time.perf_counter() - clock
    return {"seconds": seconds, "violations": sum(r.count or 0 for r in report.reports)}


def check_parallel(url: str, users: int) -> dict[str, Any]:
    """invariants, check only, with the rules spread over four connections."""
    engine = engine_from_url(url)
    clock = time.perf_counter()
    run(engine, now=NOW, history=False, workers=4, **ISOLATED)
    return {"seconds": time.perf_counter() - clock}


def floor_check(url: str, users: int) -> dict[str, Any]:
    """The same counts by hand: one count(*) per rule, nothing else."""
    engine = engine_from_url(url)
    clock = time.perf_counter()
    total = 0
    with engine.connect() as conn:
        for sql in CHECKS.values():
            total += conn.execute(text(f"SELECT count(*) FROM ({sql}) v"), PARAMS).scalar_one()
    return {"seconds": time.perf_counter() - clock, "violations": total}


def repair(url: str, users: int) -> dict[str, Any]:
    """invariants --repair: plan, journal, execute, re-check, record history."""
    engine = engine_from_url(url)
    clock = time.perf_counter()
    report = run(engine, now=NOW, repair=True, force=True, **ISOLATED)
    seconds = time.perf_counter() - clock
    changed = sum(r.repair.rows_changed for r in report.reports if r.repair)
    return {"seconds": seconds, "changed": changed, "exit": report.exit_code}


def floor_repair(url: str, users: int) -> dict[str, Any]:
    """The same repairs by hand, in one transaction, no journal."""
    engine = engine_from_url(url)
    clock = time.perf_counter()
    changed = 0
    with engine.begin() as conn:
        for sql in REPAIRS:
            changed += conn.execute(text(sql), PARAMS).rowcount
    return {"seconds": time.perf_counter() - clock, "changed": changed}


def orm_loop(url: str, users: int, sample: int = 2000) -> dict[str, Any]:
    """The original system's way: load each user through the ORM, fix, commit; extrapolated."""
    engine = engine_from_url(url)
    ids = random.Random(7).sample(range(1, users + 1), min(sample, users))
    clock = time.perf_counter()
    with Session(engine) as session:
        for uid in ids:
            _sync_one_user(session, uid)
            session.commit()
    seconds = time.perf_counter() - clock
    return {
        "seconds": seconds * users / len(ids),
        "measured_users": len(ids),
        "measured_seconds": seconds,
    }


def _sync_one_user(session: Session, uid: int) -> None:
    if session.get(User, uid) is None:
        return
    profile = session.scalars(select(Profile).where(Profile.user_id == uid)).first()
    if profile is None:
        profile = Profile(user_id=uid, is_premium=False)
        session.add(profile)
    subs = session.scalars(select(Subscription).where(Subscription.user_id == uid)).all()
    for sub in subs:
        if sub.status == "active" and sub.expires_at <= NOW:
            sub.status = "expired"
    active = [s.expires_at for s in subs if s.status == "active" and s.expires_at > NOW]
    profile.is_premium = bool(active)
    profile.premium_until = max(active) if active else None
    latest = max(subs, key=lambda s: (s.expires_at, s.id), default=None)
    payments = session.scalars(
        select(Payment).where(
            Payment.user_id == uid, Payment.status == "approved", Payment.subscription_id.is_(None)
        )
    ).all()
    for payment in payments:
        if latest is not None:
            payment.subscription_id = latest.id


def scoped(url: str, users: int, calls: int = 300, select: tuple[str, ...] = ()) -> dict[str, Any]:
    """One user's check, as the per-request path runs it: configured once, called often."""
    engine = engine_from_url(url)
    config = configure(**ISOLATED)
    rng = random.Random(11)
    timings = []
    for _ in range(calls + 20):
        uid = rng.randint(1, users)
        clock = time.perf_counter()
        run(
            engine,
            config=config,
            scope=("user_id", str(uid)),
            now=NOW,
            history=False,
            select=select,
        )
        timings.append(time.perf_counter() - clock)
    timings = sorted(timings[20:])
    return {
        "seconds": statistics.median(timings),
        "p99": timings[int(len(timings) * 0.99) - 1],
    }


def scoped_one(url: str, users: int) -> dict[str, Any]:
    """One user's check of a single rule (the premium flag the request is about to trust)."""
    return scoped(url, users, select=("billing.active_subscription_grants_premium",))


APPROACHES = {
    f.__name__: f
    for f in (
        check,
        check_parallel,
        floor_check,
        repair,
        floor_repair,
        orm_loop,
        scoped,
        scoped_one,
    )
}


def main() -> None:
    approach, url, users = sys.argv[1], sys.argv[2], int(sys.argv[3])
    result = APPROACHES[approach](url, users)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


if __name__ == "__main__":
    main()
