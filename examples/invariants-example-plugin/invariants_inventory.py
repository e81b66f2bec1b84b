"""An example third-party rule plugin: stock levels never go below zero."""

from __future__ import annotations

from sqlalchemy import Column, Integer, MetaData, String, Table, select, update

from invariants import invariant

metadata = MetaData()
stock = Table(
    "stock",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("sku", String(32), nullable=False),
    Column("warehouse_id", Integer, nullable=False),
    Column("quantity", Integer, nullable=False),
)


@invariant("inventory.stock_not_negative", scope_key="warehouse_id", tags=("inventory",))
def stock_not_negative():
    """No stock line holds a negative quantity."""
    return select(stock.c.id, stock.c.warehouse_id, stock.c.sku, stock.c.quantity).where(
        stock.c.quantity < 0
    )


@stock_not_negative.repair
def clamp_to_zero(violations):
    """Set negative quantities to zero (a recount will follow)."""
    ids = select(violations.c.id).scalar_subquery()
    return update(stock).where(stock.c.id.in_(ids)).values(quantity=0)
