"""Rules that misbehave on purpose, to show how the runner contains them."""

from __future__ import annotations

from ledger_rules import accounts
from sqlalchemy import select, text, update

from invariants import invariant


@invariant("broken.raises", scope_key="owner_id")
def raises():
    """A check with a bug in it."""
    raise RuntimeError("bug in the check")


@invariant("broken.bad_sql", scope_key="owner_id")
def bad_sql():
    """A check whose SQL the database refuses."""
    return select(text("no_such_column AS owner_id")).select_from(accounts)


@invariant("broken.repair_does_not_fix", scope_key="owner_id")
def repair_does_not_fix():
    """A repair that changes rows but not the ones that matter."""
    return select(accounts.c.id, accounts.c.owner_id).where(accounts.c.balance < 0)


@repair_does_not_fix.repair
def wrong_repair(violations):
    return update(accounts).where(accounts.c.balance > 0).values(balance=accounts.c.balance + 1)
