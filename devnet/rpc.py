"""The devnet's JSON-RPC 2.0 endpoint: hived's call styles, batches and error shapes.

hived sources followed: libraries/plugins/json_rpc/json_rpc_plugin.cpp (request
validation, ``call`` vs ``api.method``, "Could not find API/method" asserts, fc
exceptions as ``{code, message, data}``) and the condenser/database/block API
plugins for argument shapes. Every answer is built under the chain lock and
serialised after it is released; only synchronous broadcast waits, unlocked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from devnet import api
from devnet.access import ChainAccess
from devnet.api import (
    ERROR_DURING_CALL,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    SERVER_ERROR,
    InvalidParamsError,
    RpcError,
    fc_error,
)
from devnet.errors import TxRejectedError

log = logging.getLogger(__name__)

ExtraMethod = Callable[[object], object]
__all__ = ["Dispatcher", "ExtraMethod", "InvalidParamsError", "RpcError", "fc_error"]
_NO_ID = object()


# hived's fc exception kinds by the text their messages start with
# (protocol/exceptions.hpp, chain/database_exceptions.hpp).
_FC_KINDS: tuple[tuple[str, int, str], ...] = (
    ("missing required active authority", 3010000, "tx_missing_active_auth"),
    ("missing required owner authority", 3020000, "tx_missing_owner_auth"),
    ("missing required posting authority", 3030000, "tx_missing_posting_auth"),
    ("missing required authority", 3040000, "tx_missing_other_auth"),
    ("missing required other authority", 3040000, "tx_missing_other_auth"),
    ("irrelevant signature included", 3050000, "tx_irrelevant_sig"),
    ("duplicate signature included", 3060000, "tx_duplicate_sig"),
    ("transaction expiration exception", 4030100, "transaction_expiration_exception"),
    ("transaction tapos exception", 4030200, "transaction_tapos_exception"),
)


def rejected(e: TxRejectedError, method: str) -> RpcError:
    """A refused transaction as hived reports it: fc exception text and variant."""
    code = e.code if e.code in (SERVER_ERROR, ERROR_DURING_CALL) else SERVER_ERROR
    for what, fc_code, name in _FC_KINDS:
        if e.message.startswith(what):
            detail = e.message[len(what):].lstrip(": ") or what
            return fc_error(code, what, detail, fc_code=fc_code, name=name, method=method)
    return fc_error(code, "Assert Exception", e.message, method=method)


class Dispatcher:
    """Answers JSON-RPC request bodies against one chain.

    ``node_name`` marks a producer node's own API (its ``get_version`` names it).
    ``extra_methods`` (e.g. ``devnet.status``) are called with the raw params
    and without the chain lock; they lock for themselves.
    """

    def __init__(self, access: ChainAccess, extra_methods: Mapping[str, ExtraMethod], *,
                 sync_timeout_s: float = 30.0, node_name: str | None = None) -> None:
        self._access = access
        self._extra = dict(extra_methods)
        self._api = api.ChainApi(access, sync_timeout_s=sync_timeout_s, node_name=node_name)
        self._api.methods["jsonrpc.get_methods"] = api.Method(self._get_methods, locked=False)
        self._apis = {name.split(".", 1)[0] for name in [*self._api.methods, *self._extra]}

    def handle(self, body: bytes) -> bytes | None:
        """Answer one HTTP body; None when it held only notifications.

        Never raises: any failure becomes a JSON-RPC error object.
        """
        try:
            answer = self._handle(body)
        except Exception:
            log.exception("unexpected failure answering a request")
            answer = _response(None, error=RpcError(INTERNAL_ERROR, "Internal error"))
        if answer is None:
            return None
        return json.dumps(answer, separators=(",", ":")).encode()

    def _handle(self, body: bytes) -> object:
        try:
            message = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            return _response(None, error=RpcError(PARSE_ERROR, "Parse error"))
        if isinstance(message, list):
            if not message:
                return _response(None, error=RpcError(INVALID_REQUEST, "Array is invalid"))
            answers = [a for a in (self._one(m) for m in message) if a is not None]
            return answers or None
        return self._one(message)

    def _one(self, request: object) -> dict[str, Any] | None:
        """Answer one request object; None for a notification (no ``id`` member)."""
        if not isinstance(request, dict):
            return _response(None, error=RpcError(INVALID_REQUEST, "Invalid Request"))
        rid = request.get("id", _NO_ID)
        if rid is not _NO_ID and (isinstance(rid, bool) or
                                  not isinstance(rid, str | int | float | type(None))):
            return _response(None, error=RpcError(
                INVALID_REQUEST, 'Only integer value or string is allowed for member "id"'))
        echo = None if rid is _NO_ID else rid
        if request.get("jsonrpc") != "2.0":
            return _response(echo, error=RpcError(INVALID_REQUEST,
                                                  'jsonrpc value is not "2.0"'))
        method = request.get("method")
        if not isinstance(method, str):
            return _response(echo, error=RpcError(INVALID_REQUEST,
                                                  'A member "method" does not exist'))
        try:
            result = self._call(method, request.get("params"))
        except RpcError as e:
            answer = _response(echo, error=e)
        except InvalidParamsError as e:
            answer = _response(echo, error=RpcError(INVALID_PARAMS, f"Invalid parameters: {e}"))
        except TxRejectedError as e:
            answer = _response(echo, error=rejected(e, method))
        except Exception:
            # The details go to the log only; the body stays generic (STYLE.md 3).
            log.exception("unexpected failure in %s", method)
            answer = _response(echo, error=RpcError(INTERNAL_ERROR, "Internal error"))
        else:
            answer = _response(echo, result=result)
        return None if rid is _NO_ID else answer

    def _call(self, method: str, params: object) -> object:
        if method == "call":
            name, params = _unwrap_call(params)
        else:
            name = method
        extra = self._extra.get(name)
        if extra is not None:
            return extra(params)
        return self._api.call(self._find(name), params)

    def _find(self, name: str) -> api.Method:
        parts = name.split(".")
        if len(parts) != 2:
            raise fc_error(METHOD_NOT_FOUND, "Assert Exception",
                           "v.size() == 2: method specification invalid. Should be api.method",
                           method="process_params")
        found = self._api.methods.get(name)
        if found is not None:
            return found
        if parts[0] not in self._apis:
            raise fc_error(METHOD_NOT_FOUND, "Assert Exception",
                           f"api_itr != data._registered_apis.end(): Could not find API {parts[0]}",
                           method="find_api_method")
        raise fc_error(METHOD_NOT_FOUND, "Assert Exception",
                       f"method_itr != api_itr->second.end(): Could not find method {parts[1]}",
                       method="find_api_method")

    def _get_methods(self, params: object) -> list[str]:
        """``jsonrpc.get_methods``: every callable name, sorted like hived's list."""
        return sorted({*self._api.methods, *self._extra})


def _unwrap_call(params: object) -> tuple[str, object]:
    """``["api", "method", args]`` of the legacy ``call`` style (args default ``{}``)."""
    if not isinstance(params, list) or len(params) not in (2, 3) or not all(
            isinstance(p, str) for p in params[:2]):
        raise InvalidParamsError('params should be ["api", "method", args]')
    args = params[2] if len(params) == 3 else {}
    return f"{params[0]}.{params[1]}", args


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _response(rid: object, *, result: object = None,
              error: RpcError | None = None) -> dict[str, Any]:
    if error is not None:
        return {"jsonrpc": "2.0", "error": error.as_json(), "id": rid}
    return {"jsonrpc": "2.0", "result": result, "id": rid}
