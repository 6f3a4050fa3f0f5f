"""Testing kit: FakeSynerise, a fake Synerise client-auth API served over real HTTP."""

from __future__ import annotations

from .fake import DEFAULT_API_KEY, FakeClient, FakeSynerise, ProviderIdentity, RecordedRequest
from .faults import FAULT_KINDS, FaultRule

__all__ = [
    "DEFAULT_API_KEY",
    "FAULT_KINDS",
    "FakeClient",
    "FakeSynerise",
    "FaultRule",
    "ProviderIdentity",
    "RecordedRequest",
]
