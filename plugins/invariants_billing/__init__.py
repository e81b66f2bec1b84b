"""The built-in billing rules: the original system's domain, as an invariants plugin."""

from __future__ import annotations

from invariants_billing.demo import drop, populate
from invariants_billing.models import Base, Payment, Profile, Subscription, User
from invariants_billing.rules import (
    active_subscription_grants_premium,
    approved_payment_has_subscription,
    premium_has_active_subscription,
    premium_until_matches_subscriptions,
    profile_exists,
    subscription_not_active_past_expiry,
)

__all__ = [
    "Base",
    "Payment",
    "Profile",
    "Subscription",
    "User",
    "active_subscription_grants_premium",
    "approved_payment_has_subscription",
    "drop",
    "populate",
    "premium_has_active_subscription",
    "premium_until_matches_subscriptions",
    "profile_exists",
    "subscription_not_active_past_expiry",
]
