"""The transfer feature's one error: a request that cannot be done."""

from __future__ import annotations


class TransferError(Exception):
    """A transfer request that cannot be done (unknown call, wrong state, no route...). The message
    is for humans (console users, logs); the conversation is left as it was."""
