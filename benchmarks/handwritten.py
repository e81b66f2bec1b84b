"""The billing checks and repairs written by hand in plain SQL: the floor to compare with."""

from __future__ import annotations

ACTIVE = "s.user_id = {p}.user_id AND s.status = 'active' AND s.expires_at > :now"

CHECKS = {
    "billing.profile_exists": (
        "SELECT u.id AS user_id FROM users u LEFT JOIN profiles p ON p.user_id = u.id "
        "WHERE p.id IS NULL"
    ),
    "billing.subscription_not_active_past_expiry": (
        "SELECT id, user_id FROM subscriptions WHERE status = 'active' AND expires_at <= :now"
    ),
    "billing.premium_has_active_subscription": (
        "SELECT p.id, p.user_id FROM profiles p WHERE p.is_premium = :yes AND NOT EXISTS "
        f"(SELECT 1 FROM subscriptions s WHERE {ACTIVE.format(p='p')})"
    ),
    "billing.active_subscription_grants_premium": (
        "SELECT p.id, p.user_id FROM profiles p WHERE p.is_premium = :no AND EXISTS "
        f"(SELECT 1 FROM subscriptions s WHERE {ACTIVE.format(p='p')})"
    ),
    "billing.premium_until_matches_subscriptions": (
        "SELECT p.id, p.user_id FROM profiles p JOIN (SELECT user_id, max(expires_at) AS latest "
        "FROM subscriptions WHERE status = 'active' AND expires_at > :now GROUP BY user_id) l "
        "ON l.user_id = p.user_id WHERE p.is_premium = :yes "
        "AND (p.premium_until IS NULL OR p.premium_until <> l.latest)"
    ),
    "billing.approved_payment_has_subscription": (
        "SELECT id, user_id FROM payments WHERE status = 'approved' AND subscription_id IS NULL"
    ),
}

LATEST = "(SELECT max(s.expires_at) FROM subscriptions s WHERE " + ACTIVE.format(p="profiles") + ")"

#: In dependency order, as one transaction: what a careful person would run by hand.
REPAIRS = (
    "INSERT INTO profiles (user_id, is_premium, premium_until) SELECT u.id, :no, NULL "
    "FROM users u LEFT JOIN profiles p ON p.user_id = u.id WHERE p.id IS NULL",
    "UPDATE subscriptions SET status = 'expired' WHERE status = 'active' AND expires_at <= :now",
    f"UPDATE profiles SET is_premium = :yes, premium_until = {LATEST} WHERE is_premium = :no "
    f"AND EXISTS (SELECT 1 FROM subscriptions s WHERE {ACTIVE.format(p='profiles')})",
    "UPDATE profiles SET is_premium = :no, premium_until = NULL WHERE is_premium = :yes "
    f"AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE {ACTIVE.format(p='profiles')})",
    f"UPDATE profiles SET premium_until = {LATEST} WHERE is_premium = :yes "
    f"AND (premium_until IS NULL OR premium_until <> {LATEST})",
    "UPDATE payments SET subscription_id = (SELECT s.id FROM subscriptions s "
    "WHERE s.user_id = payments.user_id ORDER BY s.expires_at DESC, s.id DESC LIMIT 1) "
    "WHERE status = 'approved' AND subscription_id IS NULL "
    "AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.user_id = payments.user_id)",
)
