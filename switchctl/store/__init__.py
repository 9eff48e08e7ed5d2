"""Persistent shared state (accounts, ledger, reservations) on SQLite or PostgreSQL."""

from switchctl.store.database import Store, StoreError

__all__ = ["Store", "StoreError"]
