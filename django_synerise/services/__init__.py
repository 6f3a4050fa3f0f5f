"""The service layer: the only place with business logic (views, tasks, commands, admin call it).

Import from here: ``from django_synerise import services; services.get_valid_token(user)``.
"""

from __future__ import annotations

from .activity import account_for_client_id, touch_activity, user_for_client_id
from .connect import ConnectReport, connect, connect_users, request_connection, users_to_connect
from .halt import current_halt, refresh_allowed
from .identity import (
    identity_provider_enabled,
    mint_identity_token,
    subject_for,
    user_for_identity_token,
    verify_identity_token,
)
from .keys import RotationReport, rotate_encryption_keys
from .login import IDENTITY_PROVIDERS, AccountConflict, LoginResult, login
from .refresh import (
    EXPIRY_SAFETY,
    BatchReport,
    Claim,
    RefreshReport,
    backoff_delay,
    claim_due_tokens,
    claim_tokens,
    count_due_tokens,
    due_tokens,
    purge_tokens,
    refresh_batch,
    refresh_due_tokens,
    refresh_now,
)
from .sessions import end_sessions
from .single_flight import (
    ValidToken,
    get_valid_client_token,
    get_valid_token,
    refresh_client_token,
    refresh_user_token,
)
from .tokens import (
    PreparedToken,
    check_business_profile,
    check_presented_token,
    compute_refresh_at,
    get_token_for,
    logout,
    mark_needs_login,
    prepare_token,
    revoke_tokens,
    store_token,
)
from .tracking import TrackerConfig, tracker_config, web_sdk_token

__all__ = [
    "EXPIRY_SAFETY",
    "IDENTITY_PROVIDERS",
    "AccountConflict",
    "BatchReport",
    "Claim",
    "ConnectReport",
    "LoginResult",
    "PreparedToken",
    "RefreshReport",
    "RotationReport",
    "TrackerConfig",
    "ValidToken",
    "account_for_client_id",
    "backoff_delay",
    "check_business_profile",
    "check_presented_token",
    "claim_due_tokens",
    "claim_tokens",
    "compute_refresh_at",
    "connect",
    "connect_users",
    "count_due_tokens",
    "current_halt",
    "due_tokens",
    "end_sessions",
    "get_token_for",
    "get_valid_client_token",
    "get_valid_token",
    "identity_provider_enabled",
    "login",
    "logout",
    "mark_needs_login",
    "mint_identity_token",
    "prepare_token",
    "purge_tokens",
    "refresh_allowed",
    "refresh_batch",
    "refresh_client_token",
    "refresh_due_tokens",
    "refresh_now",
    "refresh_user_token",
    "request_connection",
    "revoke_tokens",
    "rotate_encryption_keys",
    "store_token",
    "subject_for",
    "touch_activity",
    "tracker_config",
    "user_for_client_id",
    "user_for_identity_token",
    "users_to_connect",
    "verify_identity_token",
    "web_sdk_token",
]
