"""Persistent shared state (accounts, ledger, reservations, CDRs) on SQLite or PostgreSQL."""

from switchctl.store import cdr_models as _cdr_models  # noqa: F401  (registers the CDR tables for create_all)
from switchctl.store.database import Store, StoreError

__all__ = ["Store", "StoreError"]
