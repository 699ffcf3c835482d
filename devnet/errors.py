"""Errors of the devnet's transaction checks, shaped like hived's answers.

hived reports a refused transaction as a JSON-RPC error whose message is the fc
exception text (libraries/plugins/json_rpc/json_rpc_plugin.cpp): an
``fc::assert_exception`` raised inside the call answers -32003, any other fc
exception (missing authority, expiration, TaPoS) answers -32000.
"""

from __future__ import annotations

from shared.errors import FailoverError

SERVER_ERROR = -32000  # JSON_RPC_SERVER_ERROR: hived's answer for chain exceptions
ERROR_DURING_CALL = -32003  # JSON_RPC_ERROR_DURING_CALL: an FC_ASSERT failed in the call


class TxRejectedError(FailoverError):
    """hived would refuse this transaction; ``message`` mirrors hived's wording.

    ``code`` is the JSON-RPC error code to answer with.
    """

    def __init__(self, message: str, *, code: int = SERVER_ERROR) -> None:
        self.message = message
        self.code = code
        super().__init__(message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code})"


class InvalidKeyError(TxRejectedError):
    """A key string or WIF is malformed: prefix, base58, length or checksum."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=ERROR_DURING_CALL)


class InvalidSignatureError(TxRejectedError):
    """A signature cannot yield a public key: malformed, non-canonical or off-curve."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=ERROR_DURING_CALL)
