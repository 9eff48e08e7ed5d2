"""The controller's read-only HTTP API (api.py)."""

from .api import WebApi

__all__ = ["WebApi"]
