"""The transfer feature: blind, attended, semi-attended and three-way transfers that never lose a
caller (service.py), read from in-call feature codes (codes.py) or asked for through the API."""

from switchctl.features.transfer.errors import TransferError
from switchctl.features.transfer.options import (
    DEFAULT_CODES,
    TransferOptions,
    TransferRoute,
)
from switchctl.features.transfer.service import TransferService

__all__ = ["DEFAULT_CODES", "TransferError", "TransferOptions", "TransferRoute", "TransferService"]
