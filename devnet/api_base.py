"""What every devnet API method shares: JSON-RPC error codes and shapes, and argument checks.

Arguments as hived's plugins take them: condenser_api positional (``CHECK_ARG_SIZE``),
the appbase APIs named objects (unknown fields ignored), lists capped at 1000
(``DATABASE_API_SINGLE_QUERY_LIMIT``). The methods themselves are in :mod:`devnet.api`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.errors import FailoverError

__all__ = [
    "ERROR_DURING_CALL",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "QUERY_LIMIT",
    "SERVER_ERROR",
    "UINT32_MAX",
    "ControlError",
    "Handler",
    "InvalidParamsError",
    "Method",
    "RpcError",
    "fc_error",
    "field",
    "integer",
    "named",
    "positional",
    "text",
    "texts",
    "transaction_arg",
]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
# hived answers an unknown method with -32002 (JSON_RPC_PARSE_PARAMS_ERROR); the
# devnet uses the JSON-RPC 2.0 code and keeps hived's message, which is what
# clients such as beem match on ("Could not find method").
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000
ERROR_DURING_CALL = -32003  # an fc assert raised inside an API method

QUERY_LIMIT = 1000
UINT32_MAX = 2**32 - 1

Handler = Callable[[object], object]


class InvalidParamsError(FailoverError):
    """A method's params are unusable (JSON-RPC -32602); extra methods may raise it too."""


class ControlError(InvalidParamsError):
    """A devnet.* control call with bad params (becomes a JSON-RPC -32602)."""


class RpcError(FailoverError):
    """A JSON-RPC error object to send back as is."""

    def __init__(self, code: int, message: str, data: object = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def as_json(self) -> dict[str, Any]:
        """The ``error`` member of a response."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def fc_error(code: int, what: str, detail: str, *, fc_code: int = 10,
             name: str = "assert_exception", method: str = "") -> RpcError:
    """An error shaped like hived's answer to an fc exception (``e.to_string()`` + variant)."""
    return RpcError(code, f"{what}:{detail}", {
        "code": fc_code, "name": name, "message": what,
        "stack": [{"context": {"level": "error", "file": "devnet", "line": 0,
                               "method": method, "hostname": ""},
                   "format": detail, "data": {}}],
    })


@dataclass(frozen=True)
class Method:
    """One API method; ``locked`` ones run entirely under the chain lock."""

    fn: Handler
    locked: bool = True


def positional(params: object, low: int, high: int | None = None) -> list[Any]:
    """condenser_api arguments: an array of ``low``..``high`` items (absent = empty)."""
    high = low if high is None else high
    if params is None or params == {}:
        params = []
    if not isinstance(params, list):
        raise InvalidParamsError("condenser_api expects an array of arguments")
    if not low <= len(params) <= high:
        expected = f"{low}" if low == high else f"{low}-{high}"
        raise InvalidParamsError(f"Expected {expected} argument(s), was {len(params)}")
    return params


def named(params: object) -> Mapping[str, Any]:
    """Appbase arguments: an object (absent or ``[]`` = no arguments)."""
    if params is None or params == []:
        return {}
    if not isinstance(params, dict):
        raise InvalidParamsError("expected an object of named arguments")
    return params


def field(args: Mapping[str, Any], key: str) -> Any:
    """A required named argument."""
    if key not in args:
        raise InvalidParamsError(f"missing field {key!r}")
    return args[key]


def integer(value: object, what: str, high: int = UINT32_MAX) -> int:
    """An integer argument in ``0..high``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise InvalidParamsError(f"{what} must be an integer in [0, {high}]")
    return value


def text(value: object, what: str) -> str:
    """A string argument."""
    if not isinstance(value, str):
        raise InvalidParamsError(f"{what} must be a string")
    return value


def texts(value: object, what: str) -> list[str]:
    """An array of at most 1000 strings."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidParamsError(f"{what} must be an array of strings")
    if len(value) > QUERY_LIMIT:
        raise InvalidParamsError(f"{what}: at most {QUERY_LIMIT} items")
    return value


def transaction_arg(value: object) -> dict[str, Any]:
    """A transaction argument: an object (its content is the codec's to judge)."""
    if not isinstance(value, dict):
        raise InvalidParamsError("the transaction must be an object")
    return value
