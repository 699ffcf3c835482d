"""A minimal JSON-RPC client for talking to a running devnet (CLI, tests, demo)."""

from __future__ import annotations

import itertools
from typing import Any

import requests

from shared.errors import ChainDataError, ChainUnavailableError

_ids = itertools.count(1)


class DevnetClient:
    """Calls JSON-RPC methods on one devnet endpoint."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._session = requests.Session()

    def call(self, method: str, params: Any = None) -> Any:
        """Call ``method`` and return its result.

        Raises:
            ChainUnavailableError: no answer (connection refused, timeout, HTTP error).
            ChainDataError: the node answered with a JSON-RPC error or garbage.
        """
        body = {"jsonrpc": "2.0", "id": next(_ids), "method": method,
                "params": {} if params is None else params}
        try:
            response = self._session.post(self.url, json=body, timeout=self.timeout_s)
        except requests.RequestException as e:
            raise ChainUnavailableError(f"{self.url}: {type(e).__name__}") from e
        if response.status_code != 200:
            raise ChainUnavailableError(f"{self.url}: HTTP {response.status_code}")
        try:
            doc = response.json()
        except ValueError as e:
            raise ChainDataError(f"{self.url}: answer is not JSON") from e
        if not isinstance(doc, dict):
            raise ChainDataError(f"{self.url}: answer is not a JSON-RPC object")
        if "error" in doc:
            err = doc["error"]
            message = err.get("message") if isinstance(err, dict) else err
            raise ChainDataError(f"{method}: {message}")
        return doc.get("result")

    def status(self) -> dict[str, Any]:
        """The devnet.status document."""
        result = self.call("devnet.status")
        if not isinstance(result, dict):
            raise ChainDataError("devnet.status: not an object")
        return result

    def close(self) -> None:
        """Close the underlying HTTP session."""
        self._session.close()
