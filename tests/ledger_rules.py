"""A small rule plugin the core tests run against: accounts that must not go negative."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, select, update
from sqlalchemy.engine import Connection

from invariants import invariant

metadata = MetaData()
owners = Table(
    "owners", metadata, Column("id", Integer, primary_key=True), Column("name", String(40))
)
accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("owner_id", Integer, ForeignKey("owners.id"), nullable=False),
    Column("balance", Integer, nullable=False),
    Column("email", String(80)),
)


@invariant("ledger.balance_not_negative", scope_key="owner_id", tags=("ledger", "money"))
def balance_not_negative():
    """No account has a negative balance."""
    return select(accounts.c.id, accounts.c.owner_id, accounts.c.balance).where(
        accounts.c.balance < 0
    )


@balance_not_negative.repair
def zero_negative_balances(violations):
    inner = select(violations.c.id).scalar_subquery()
    return update(accounts).where(accounts.c.id.in_(inner)).values(balance=0)


@invariant(
    "ledger.owner_named",
    scope_key="owner_id",
    severity="warning",
    tags=("ledger",),
    depends_on=("ledger.balance_not_negative",),
)
def owner_named():
    """Every owner has a name."""
    return select(owners.c.id.label("owner_id")).where(owners.c.name.is_(None))


@owner_named.repair
def name_owners(violations):
    inner = select(violations.c.owner_id).scalar_subquery()
    return update(owners).where(owners.c.id.in_(inner)).values(name="unknown")


@invariant("ledger.even_ids_python", scope_key="owner_id", severity="info", tags=("slow",))
def even_ids_python(conn: Connection) -> Iterator[dict[str, Any]]:
    """Accounts with an odd id and a zero balance, found in Python (the slow path)."""
    rows = conn.execute(select(accounts.c.id, accounts.c.owner_id, accounts.c.balance))
    for row in rows:
        if row.id % 2 and row.balance == 0:
            yield {"id": row.id, "owner_id": row.owner_id}


def setup(conn: Connection, balances: list[tuple[int, int]]) -> None:
    """Create the tables and insert (owner_id, balance) accounts, one owner per id."""
    metadata.create_all(conn)
    ids = sorted({o for o, _ in balances})
    if ids:
        conn.execute(owners.insert(), [{"id": i, "name": f"owner {i}"} for i in ids])
    if balances:
        conn.execute(
            accounts.insert(),
            [{"owner_id": o, "balance": b, "email": f"o{o}@example.org"} for o, b in balances],
        )
