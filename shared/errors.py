"""The one error tree of witness-failover.

Every exception the project raises derives from :class:`FailoverError`.
Foreign exceptions are translated where the foreign library is imported,
always with ``raise ... from e``. Messages never contain secrets.
"""

from __future__ import annotations


class FailoverError(Exception):
    """Root of every error this project raises."""


class ConfigError(FailoverError):
    """A configuration problem found at start-up; names the file and the field."""

    def __init__(self, message: str, *, path: str | None = None, field: str | None = None) -> None:
        self.path = path
        self.field = field
        where = ""
        if path and field:
            where = f"{path}: {field}: "
        elif path:
            where = f"{path}: "
        elif field:
            where = f"{field}: "
        super().__init__(f"{where}{message}")


class AuthError(FailoverError):
    """A request or answer failed authentication (maps to HTTP 401)."""


class StaleRequestError(AuthError):
    """The signature's ``created`` time is outside the allowed clock skew."""


class ReplayError(AuthError):
    """The nonce was already used by this key inside the window."""


class PolicyError(FailoverError):
    """The signer's policy refuses the request (maps to 403/409/429)."""

    status: int = 409


class ForbiddenError(PolicyError):
    """The authenticated client's role may not use this route (403)."""

    status = 403


class RateLimitedError(PolicyError):
    """Too many switches or requests inside the window (429)."""

    status = 429


class RequestInvalidError(FailoverError):
    """The request body is not acceptable (status 413, 415 or 422)."""

    def __init__(self, message: str, *, status: int = 422) -> None:
        self.status = status
        super().__init__(message)


class ChainError(FailoverError):
    """Something about the chain or talking to it went wrong."""


class ChainUnavailableError(ChainError):
    """We learned nothing from the chain: never act on this."""


class ChainDataError(ChainError):
    """A node answered, but the answer is wrong, inconsistent or stale."""


class BroadcastError(ChainError):
    """A transaction could not be broadcast or was rejected by the node."""


class KeystoreError(FailoverError):
    """The keystore cannot be opened, written or trusted."""


class NotifyError(FailoverError):
    """A notification could not be sent (never blocks a failover)."""
