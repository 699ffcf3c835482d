"""Whether a chain key may act for the witness: a pure check over the node's account."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, TypeGuard

from shared.errors import ChainDataError, KeystoreError

__all__ = ["check_authority"]


def check_authority(
    pubkey: str,
    mode: str,
    account_info: Mapping[str, Any],
    configured_node_keys: Collection[str],
) -> None:
    """Check that ``pubkey`` may act for the witness in ``mode``; pure, no I/O.

    ``active``: ``pubkey`` alone satisfies the account's active authority
    (a key_auths weight >= weight_threshold). ``signing``: ``pubkey`` is one of
    the configured node keys. ``account_info`` is the node's account object.

    Raises:
        KeystoreError: the key lacks the authority, or the mode is unknown.
        ChainDataError: ``account_info`` is not shaped like an account.
    """
    if mode == "signing":
        if pubkey not in configured_node_keys:
            raise KeystoreError(f"{pubkey} is not one of the configured node keys")
        return
    if mode != "active":
        raise KeystoreError(f"unknown key mode {mode!r}; expected 'active' or 'signing'")
    name = account_info.get("name")
    active = account_info.get("active")
    if not isinstance(name, str) or not isinstance(active, Mapping):
        raise ChainDataError("account object lacks name or active authority")
    threshold = active.get("weight_threshold")
    key_auths = active.get("key_auths")
    if not _is_int(threshold) or threshold < 1 or not isinstance(key_auths, list):
        raise ChainDataError(f"malformed active authority for {name}")
    for item in key_auths:
        if not (isinstance(item, list | tuple) and len(item) == 2 and _is_int(item[1])):
            raise ChainDataError(f"malformed key_auths entry for {name}")
        if item[0] == pubkey and item[1] >= threshold:
            return
    raise KeystoreError(f"key has no active authority over {name}")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
