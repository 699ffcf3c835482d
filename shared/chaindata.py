"""Typed views of the chain objects both services read, parsed strictly."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.errors import ChainDataError

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


def parse_time(value: object, what: str) -> datetime:
    """Parse a chain timestamp (UTC, no zone suffix).

    Raises:
        ChainDataError: not a chain timestamp.
    """
    if not isinstance(value, str):
        raise ChainDataError(f"{what}: not a timestamp")
    try:
        return datetime.strptime(value, _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError as e:
        raise ChainDataError(f"{what}: bad timestamp {value[:40]!r}") from e


def _int(doc: dict[str, Any], key: str, what: str) -> int:
    value = doc.get(key)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ChainDataError(f"{what}: {key} missing or not a non-negative integer")
    return value


def _str(doc: dict[str, Any], key: str, what: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise ChainDataError(f"{what}: {key} missing or not a string")
    return value


@dataclass(frozen=True)
class DynamicProps:
    """The head of the chain as a node reports it."""

    head_block_number: int
    head_block_id: str
    time: datetime
    current_aslot: int
    last_irreversible_block_num: int
    current_witness: str


@dataclass(frozen=True)
class WitnessInfo:
    """A witness as a node reports it (condenser_api shape)."""

    owner: str
    signing_key: str
    total_missed: int
    last_confirmed_block_num: int
    last_aslot: int
    url: str
    props: dict[str, Any] = field(hash=False, compare=False)
    raw: dict[str, Any] = field(hash=False, compare=False, repr=False)


def parse_dgpo(doc: object) -> DynamicProps:
    """Parse get_dynamic_global_properties.

    Raises:
        ChainDataError: missing or mistyped fields.
    """
    what = "dynamic global properties"
    if not isinstance(doc, dict):
        raise ChainDataError(f"{what}: not an object")
    head_id = _str(doc, "head_block_id", what)
    if len(head_id) != 40:
        raise ChainDataError(f"{what}: head_block_id is not a block id")
    try:
        bytes.fromhex(head_id)
    except ValueError as e:
        raise ChainDataError(f"{what}: head_block_id is not hex") from e
    return DynamicProps(
        head_block_number=_int(doc, "head_block_number", what),
        head_block_id=head_id,
        time=parse_time(doc.get("time"), f"{what}: time"),
        current_aslot=_int(doc, "current_aslot", what),
        last_irreversible_block_num=_int(doc, "last_irreversible_block_num", what),
        current_witness=_str(doc, "current_witness", what),
    )


def parse_witness(doc: object, account: str) -> WitnessInfo:
    """Parse get_witness_by_account for ``account``.

    Raises:
        ChainDataError: no such witness, the wrong witness, or bad fields.
    """
    what = f"witness {account}"
    if doc is None:
        raise ChainDataError(f"{what}: not a witness on this chain")
    if not isinstance(doc, dict):
        raise ChainDataError(f"{what}: not an object")
    owner = _str(doc, "owner", what)
    if owner != account:
        raise ChainDataError(f"{what}: node answered for {owner!r}")
    props = doc.get("props")
    if not isinstance(props, dict):
        raise ChainDataError(f"{what}: props missing")
    key = _str(doc, "signing_key", what)
    if not key.startswith("STM"):
        raise ChainDataError(f"{what}: signing_key is not an STM key")
    return WitnessInfo(
        owner=owner,
        signing_key=key,
        total_missed=_int(doc, "total_missed", what),
        last_confirmed_block_num=_int(doc, "last_confirmed_block_num", what),
        last_aslot=_int(doc, "last_aslot", what),
        url=_str(doc, "url", what),
        props=dict(props),
        raw=dict(doc),
    )
