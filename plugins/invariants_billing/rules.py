"""The billing invariants: profiles exist, premium flags and dates follow the subscriptions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    exists,
    false,
    func,
    insert,
    null,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.sql import FromClause

from invariants import invariant
from invariants_billing.models import Payment, Profile, Subscription, User

__all__ = [
    "RULE_IDS",
    "active_subscription_grants_premium",
    "approved_payment_has_subscription",
    "premium_has_active_subscription",
    "premium_until_matches_subscriptions",
    "profile_exists",
    "subscription_not_active_past_expiry",
]

TAGS = ("billing",)
PREMIUM = ("billing.profile_exists", "billing.subscription_not_active_past_expiry")


def _active(now: datetime) -> ColumnElement[bool]:
    """A subscription that grants premium right now."""
    return and_(Subscription.status == "active", Subscription.expires_at > now)


def _latest_expiry(now: datetime) -> Any:
    """The latest active expiry of the profile's user (correlated to ``profiles``)."""
    return (
        select(func.max(Subscription.expires_at))
        .where(Subscription.user_id == Profile.user_id, _active(now))
        .scalar_subquery()
    )


def _ids(violations: FromClause) -> Select:
    """The violating rows' ids, read through the ``violations`` derived table.

    An UPDATE whose WHERE reads its own table directly is refused by MySQL (error 1093)
    and by MariaDB before 10.3.2; reading it from a derived table is accepted everywhere.
    """
    return select(violations.c.id)


@invariant("billing.profile_exists", scope_key="user_id", tags=(*TAGS, "profiles"))
def profile_exists() -> Select:
    """Every user has a profile."""
    return (
        select(User.id.label("user_id"), User.created_at)
        .outerjoin(Profile, Profile.user_id == User.id)
        .where(Profile.id.is_(None))
    )


@profile_exists.repair
def create_missing_profiles(violations: FromClause) -> Any:
    """Give each such user a plain profile; the premium rules then set its flag."""
    return insert(Profile).from_select(
        ["user_id", "is_premium", "premium_until"],
        select(violations.c.user_id, false(), null()),
    )


@invariant(
    "billing.subscription_not_active_past_expiry",
    scope_key="user_id",
    tags=(*TAGS, "subscriptions"),
)
def subscription_not_active_past_expiry(now: datetime) -> Select:
    """No subscription is still active after it expired."""
    return select(Subscription.id, Subscription.user_id, Subscription.expires_at).where(
        Subscription.status == "active", Subscription.expires_at <= now
    )


@subscription_not_active_past_expiry.repair
def expire_subscriptions(violations: FromClause) -> Any:
    """Mark them expired."""
    return (
        update(Subscription).where(Subscription.id.in_(_ids(violations))).values(status="expired")
    )


@invariant(
    "billing.premium_has_active_subscription",
    scope_key="user_id",
    tags=(*TAGS, "premium"),
    depends_on=PREMIUM,
)
def premium_has_active_subscription(now: datetime) -> Select:
    """A premium profile has an active, unexpired subscription."""
    backed = exists().where(Subscription.user_id == Profile.user_id, _active(now))
    return select(Profile.id, Profile.user_id, Profile.premium_until).where(
        Profile.is_premium == true(), ~backed
    )


@premium_has_active_subscription.repair
def revoke_unbacked_premium(violations: FromClause) -> Any:
    """Remove premium access nothing grants any more."""
    return (
        update(Profile)
        .where(Profile.id.in_(_ids(violations)))
        .values(is_premium=False, premium_until=None)
    )


@invariant(
    "billing.active_subscription_grants_premium",
    scope_key="user_id",
    tags=(*TAGS, "premium"),
    depends_on=PREMIUM,
)
def active_subscription_grants_premium(now: datetime) -> Select:
    """A user with an active, unexpired subscription has a premium profile."""
    backed = exists().where(Subscription.user_id == Profile.user_id, _active(now))
    return select(Profile.id, Profile.user_id, Profile.premium_until).where(
        Profile.is_premium == false(), backed
    )


@active_subscription_grants_premium.repair
def restore_premium(violations: FromClause, now: datetime) -> Any:
    """Give premium back, until the latest active expiry (the lost-after-deploy fix)."""
    return (
        update(Profile)
        .where(Profile.id.in_(_ids(violations)))
        .values(is_premium=True, premium_until=_latest_expiry(now))
    )


@invariant(
    "billing.premium_until_matches_subscriptions",
    scope_key="user_id",
    severity="warning",
    tags=(*TAGS, "premium"),
    depends_on=(*PREMIUM, "billing.active_subscription_grants_premium"),
)
def premium_until_matches_subscriptions(now: datetime) -> Select:
    """A premium profile's premium_until is the latest expiry of its active subscriptions."""
    latest = (
        select(Subscription.user_id, func.max(Subscription.expires_at).label("latest"))
        .where(_active(now))
        .group_by(Subscription.user_id)
        .subquery("latest")
    )
    return (
        select(
            Profile.id, Profile.user_id, Profile.premium_until, latest.c.latest.label("expected")
        )
        .join(latest, latest.c.user_id == Profile.user_id)
        .where(Profile.is_premium == true())
        .where(or_(Profile.premium_until.is_(None), Profile.premium_until != latest.c.latest))
    )


@premium_until_matches_subscriptions.repair
def align_premium_until(violations: FromClause, now: datetime) -> Any:
    """Set premium_until to the latest active expiry."""
    return (
        update(Profile)
        .where(Profile.id.in_(_ids(violations)))
        .values(premium_until=_latest_expiry(now))
    )


@invariant(
    "billing.approved_payment_has_subscription",
    scope_key="user_id",
    tags=(*TAGS, "payments"),
)
def approved_payment_has_subscription() -> Select:
    """An approved payment belongs to a subscription."""
    return select(Payment.id, Payment.user_id, Payment.amount, Payment.created_at).where(
        Payment.status == "approved", Payment.subscription_id.is_(None)
    )


@approved_payment_has_subscription.repair
def link_payments(violations: FromClause) -> Any:
    """Attach each to the user's latest subscription (a payment with none stays flagged)."""
    latest = (
        select(Subscription.id)
        .where(Subscription.user_id == Payment.user_id)
        .order_by(Subscription.expires_at.desc(), Subscription.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    has_one = exists().where(Subscription.user_id == Payment.user_id)
    return (
        update(Payment)
        .where(Payment.id.in_(_ids(violations)), has_one)
        .values(subscription_id=latest)
    )


#: Every billing rule id, in the order the rules are declared.
RULE_IDS = tuple(
    rule.id
    for rule in (
        profile_exists,
        subscription_not_active_past_expiry,
        premium_has_active_subscription,
        active_subscription_grants_premium,
        premium_until_matches_subscriptions,
        approved_payment_has_subscription,
    )
)
