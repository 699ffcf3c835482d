"""The operations the devnet understands: typed values, hived's validate(), binary packing.

hived sources followed: libraries/protocol/include/hive/protocol/hive_operations.hpp
(field order, required authorities), libraries/protocol/hive_operations.cpp
(``validate()``), libraries/protocol/include/hive/protocol/config.hpp (limits) and
asset_symbol.hpp (legacy 8-byte symbols; the 4-byte NAI form is also unpacked).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar

from devnet.errors import ERROR_DURING_CALL, InvalidKeyError, TxRejectedError
from devnet.keys import public_key_from_str, public_key_to_str
from shared.chains import Asset, ChainProfile

HIVE_100_PERCENT = 10000
MIN_ACCOUNT_CREATION_FEE = 1
MAX_ACCOUNT_CREATION_FEE = 1_000_000_000
MIN_BLOCK_SIZE_LIMIT = 64 * 1024  # HIVE_MIN_BLOCK_SIZE_LIMIT = HIVE_MAX_TRANSACTION_SIZE
MAX_BLOCK_SIZE = 64 * 1024 * 3 * 2000
MAX_WITNESS_URL_LENGTH = 2048
MAX_MEMO_SIZE = 2048
RD_MIN_BUDGET, RD_MAX_BUDGET = 1, (1 << 28) - 1
RD_MIN_DECAY, RD_MAX_DECAY = 1 << 6, 0xFFFFFFFF
DEFAULT_INTEREST_RATE = 10 * HIVE_100_PERCENT // 100  # HIVE_DEFAULT_HBD_INTEREST_RATE
DEFAULT_MAXIMUM_BLOCK_SIZE = 2 * MIN_BLOCK_SIZE_LIMIT
NULL_KEY_BYTES = bytes(33)
# HIVE_ASSET_NUM_*: ((SMT_MAX_NAI + n) << 5) | precision, the HF26 4-byte symbol form.
_ASSET_NUMS = {((99999999 + 1) << 5) | 3: "debt", ((99999999 + 2) << 5) | 3: "core",
               ((99999999 + 3) << 5) | 6: "vests"}


def reject(message: str) -> TxRejectedError:
    """An ``fc::assert_exception`` as hived's validate() raises it."""
    return TxRejectedError(message, code=ERROR_DURING_CALL)


# ---- binary primitives (fc::raw) -------------------------------------------------


def varint(n: int) -> bytes:
    """fc's ``unsigned_int``: unsigned LEB128."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pack_bytes(data: bytes) -> bytes:
    """A ``vector<char>``: length, then the bytes."""
    return varint(len(data)) + data


def pack_string(text: str) -> bytes:
    """A ``std::string``: UTF-8 length, then the bytes."""
    return pack_bytes(text.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True)
class Amount:
    """An asset amount in satoshis of one of the profile's assets."""

    amount: int
    asset: Asset

    def pack(self) -> bytes:
        """int64 amount, uint8 precision, 7-byte pre-HF24 name ("STEEM", "SBD", "VESTS")."""
        name = self.asset.legacy_name.encode().ljust(7, b"\0")
        return struct.pack("<qB", self.amount, self.asset.precision) + name


class Reader:
    """Unpacks the values of ``witness_set_properties`` the way fc::raw::unpack does."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data, self._pos, self._what = data, 0, what

    def take(self, n: int) -> bytes:
        if self._pos + n > len(self._data):
            raise reject(f"{self._what}: read datastream over by {self._pos + n - len(self._data)}")
        chunk = self._data[self._pos:self._pos + n]
        self._pos += n
        return chunk

    def number(self, fmt: str) -> int:
        value: int = struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]
        return value

    def string(self) -> str:
        size, shift = 0, 0
        while True:
            byte = self.number("B")
            size |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            if shift > 35:
                raise reject(f"{self._what}: varint too long")
        raw = self.take(size)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise reject(f"{self._what}: not valid UTF8") from e

    def amount(self, profile: ChainProfile) -> Amount:
        """An ``asset``: int64 amount, then an 8-byte legacy or a 4-byte NAI symbol."""
        amount = self.number("q")
        head = self.take(4)
        for asset in (profile.core, profile.debt, profile.vests):
            legacy = Amount(0, asset).pack()[8:]
            if head == legacy[:4]:
                if self.take(4) != legacy[4:]:
                    raise reject(f"{self._what}: invalid asset bits")
                return Amount(amount, asset)
        kind = _ASSET_NUMS.get(struct.unpack("<I", head)[0])
        if kind is None:
            raise reject(f"{self._what}: invalid asset symbol")
        asset = {"core": profile.core, "debt": profile.debt, "vests": profile.vests}[kind]
        return Amount(amount, asset)

    def public_key(self) -> str:
        return public_key_to_str(self.take(33))


# ---- operations ------------------------------------------------------------------


@dataclass(frozen=True)
class ChainProperties:
    """``legacy_chain_properties``; the fee is in satoshis of the core asset."""

    account_creation_fee: int = MIN_ACCOUNT_CREATION_FEE
    maximum_block_size: int = DEFAULT_MAXIMUM_BLOCK_SIZE
    interest_rate: int = DEFAULT_INTEREST_RATE  # the profile's hbd/sbd_interest_rate


@dataclass(frozen=True)
class WitnessUpdate:
    """Op 11: the owner's active key sets url, signing key and every chain property."""

    op_id: ClassVar[int] = 11
    name: ClassVar[str] = "witness_update"
    owner: str
    url: str
    block_signing_key: str
    props: ChainProperties
    fee: Amount


@dataclass(frozen=True)
class WitnessSetProperties:
    """Op 42: the current signing key (``props["key"]``) changes only the props sent.

    ``props`` are the raw (name, bytes) pairs in hived's sorted order, as signed;
    the other fields are the decoded values the chain applies, None when absent.
    """

    op_id: ClassVar[int] = 42
    name: ClassVar[str] = "witness_set_properties"
    owner: str
    props: tuple[tuple[str, bytes], ...]
    key: str
    new_signing_key: str | None = None
    account_creation_fee: int | None = None
    maximum_block_size: int | None = None
    interest_rate: int | None = None
    exchange_rate: tuple[int, int] | None = None  # (base debt, quote core) satoshis
    url: str | None = None
    account_subsidy_budget: int | None = None
    account_subsidy_decay: int | None = None


@dataclass(frozen=True)
class Transfer:
    """Op 2: move a liquid asset; needs the sender's active authority."""

    op_id: ClassVar[int] = 2
    name: ClassVar[str] = "transfer"
    from_: str
    to: str
    amount: int
    asset: Asset
    memo: str = ""

    @property
    def symbol(self) -> str:
        """The display symbol of the transferred asset."""
        return self.asset.symbol


@dataclass(frozen=True)
class AccountWitnessVote:
    """Op 12: approve or unapprove a witness; needs the voter's active authority."""

    op_id: ClassVar[int] = 12
    name: ClassVar[str] = "account_witness_vote"
    account: str
    witness: str
    approve: bool = True


Operation = WitnessUpdate | WitnessSetProperties | Transfer | AccountWitnessVote
OPERATION_TYPES: dict[str, type[Operation]] = {
    t.name: t for t in (Transfer, WitnessUpdate, AccountWitnessVote, WitnessSetProperties)}


@dataclass(frozen=True)
class RequiredAuthorities:
    """What must sign: active authorities of accounts, and bare keys."""

    active: frozenset[str] = field(default_factory=frozenset)
    keys: frozenset[str] = field(default_factory=frozenset)


def required_authorities(op: Operation) -> RequiredAuthorities:
    """hived's ``get_required_*_authorities`` for ``op``."""
    if isinstance(op, WitnessUpdate):
        return RequiredAuthorities(active=frozenset({op.owner}))
    if isinstance(op, WitnessSetProperties):
        return RequiredAuthorities(keys=frozenset({op.key}))
    if isinstance(op, Transfer):
        return RequiredAuthorities(active=frozenset({op.from_}))
    return RequiredAuthorities(active=frozenset({op.account}))


# ---- validation (hive_operations.cpp) ------------------------------------------------


def validate_account_name(name: str) -> None:
    """hived's ``is_valid_account_name``: 3-16 chars, dot-separated RFC 1035-ish labels.

    Raises:
        TxRejectedError: the name is invalid.
    """
    ok = 3 <= len(name) <= 16 and all(
        len(label) >= 3 and "a" <= label[0] <= "z"
        and (label[-1].isdigit() or "a" <= label[-1] <= "z")
        and all(c == "-" or c.isdigit() or "a" <= c <= "z" for c in label)
        for label in name.split("."))
    if not ok or not name.isascii():
        raise reject(f"Account name '{name}' is not valid.")


def _validate_url(url: str) -> None:
    try:
        size = len(url.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise reject("URL is not valid UTF8") from e
    if size > MAX_WITNESS_URL_LENGTH:
        raise reject("URL is too long")
    if size == 0:
        raise reject("URL size must be greater than 0")


def validate_operation(op: Operation, profile: ChainProfile) -> None:
    """hived's ``op.validate()``; witness_set_properties validates while it decodes.

    Raises:
        TxRejectedError: the operation is invalid.
    """
    if isinstance(op, WitnessUpdate):
        validate_account_name(op.owner)
        _validate_url(op.url)
        # hived: FC_ASSERT( fee >= asset( 0, HIVE_SYMBOL ) ): comparing assets
        # asserts the symbols match, so a fee in HBD is refused too.
        if op.fee.asset != profile.core:
            raise reject(f"fee must be in {profile.core.symbol}")
        if op.fee.amount < 0:
            raise reject("Fee cannot be negative")
        props = op.props
        if props.account_creation_fee < MIN_ACCOUNT_CREATION_FEE:
            raise reject("account_creation_fee smaller than minimum account creation fee")
        if props.maximum_block_size < MIN_BLOCK_SIZE_LIMIT:
            raise reject("maximum_block_size smaller than minimum max block size")
        if not 0 <= props.interest_rate <= HIVE_100_PERCENT:
            raise reject(f"{profile.interest_field} must not exceed 100%")
    elif isinstance(op, Transfer):
        validate_account_name(op.from_)
        validate_account_name(op.to)
        if op.asset == profile.vests:
            raise reject("Transfer of vesting is not allowed.")
        if op.amount <= 0:
            raise reject("Cannot transfer a negative amount (aka: stealing)")
        try:
            memo_size = len(op.memo.encode("utf-8"))
        except UnicodeEncodeError as e:
            raise reject("Transfer memo is not UTF8") from e
        if memo_size > MAX_MEMO_SIZE - 1:
            raise reject("Transfer memo is too large")
    elif isinstance(op, AccountWitnessVote):
        validate_account_name(op.account)
        validate_account_name(op.witness)
    else:
        validate_account_name(op.owner)


def witness_set_properties(owner: str, props: list[tuple[str, bytes]],
                           profile: ChainProfile) -> WitnessSetProperties:
    """Decode and validate op 42's props as hived's validate() and evaluator read them.

    Unknown names are kept (they are signed) and ignored, as hived does. On Hive,
    ``sbd_*`` names win over ``hbd_*`` (both accepted since HF24); Steem knows only
    ``sbd_*``.

    Raises:
        TxRejectedError: "key" missing, a value that does not unpack, or out of range.
    """
    validate_account_name(owner)
    raw = dict(props)
    if "key" not in raw:
        raise reject("No signing key provided")
    hive = profile.interest_field == "hbd_interest_rate"

    def read(*names: str) -> Reader | None:
        name = next((n for n in names if n in raw), None)
        return None if name is None else Reader(raw[name], name)

    fee = rate = size = budget = decay = None
    new_key = url = None
    price = None
    if (r := read("account_creation_fee")) is not None:
        amount = r.amount(profile)
        if amount.asset != profile.core:
            raise reject(f"account_creation_fee must be in {profile.core.symbol}")
        if not MIN_ACCOUNT_CREATION_FEE <= amount.amount <= MAX_ACCOUNT_CREATION_FEE:
            raise reject("account_creation_fee outside the allowed range")
        fee = amount.amount
    if (r := read("maximum_block_size")) is not None:
        size = r.number("I")
        if not MIN_BLOCK_SIZE_LIMIT <= size <= MAX_BLOCK_SIZE:
            raise reject("maximum_block_size outside the allowed range")
    if (r := read("sbd_interest_rate", *(["hbd_interest_rate"] if hive else []))) is not None:
        rate = r.number("H")
        if rate > HIVE_100_PERCENT:
            raise reject("interest rate must not exceed 100%")
    if (r := read("new_signing_key")) is not None:
        new_key = r.public_key()
    if (r := read("sbd_exchange_rate", *(["hbd_exchange_rate"] if hive else []))) is not None:
        base, quote = r.amount(profile), r.amount(profile)
        if base.asset != profile.debt or quote.asset != profile.core:
            raise reject(f"Price feed must be a {profile.debt.symbol}/{profile.core.symbol} price")
        if base.amount <= 0 or quote.amount <= 0:
            raise reject("Price feed amounts must be positive")
        price = (base.amount, quote.amount)
    if (r := read("url")) is not None:
        url = r.string()
        _validate_url(url)
    if (r := read("account_subsidy_budget")) is not None:
        budget = r.number("i")
        if not RD_MIN_BUDGET <= budget <= RD_MAX_BUDGET:
            raise reject(f"Budget must be in [{RD_MIN_BUDGET}, {RD_MAX_BUDGET}]")
    if (r := read("account_subsidy_decay")) is not None:
        decay = r.number("I")
        if not RD_MIN_DECAY <= decay <= RD_MAX_DECAY:
            raise reject(f"Decay must be in [{RD_MIN_DECAY}, {RD_MAX_DECAY}]")
    return WitnessSetProperties(
        owner, tuple(sorted(raw.items())), Reader(raw["key"], "key").public_key(),
        new_signing_key=new_key, account_creation_fee=fee, maximum_block_size=size,
        interest_rate=rate, exchange_rate=price, url=url, account_subsidy_budget=budget,
        account_subsidy_decay=decay)


# ---- packing (fc::raw::pack, legacy serialization) --------------------------------------


def pack_operation(op: Operation, profile: ChainProfile) -> bytes:
    """The operation as hived packs it inside a transaction: variant index, then fields."""
    body: bytes
    if isinstance(op, WitnessUpdate):
        p = op.props
        body = (pack_string(op.owner) + pack_string(op.url)
                + _key_bytes(op.block_signing_key)
                + Amount(p.account_creation_fee, profile.core).pack()
                + struct.pack("<IH", p.maximum_block_size, p.interest_rate) + op.fee.pack())
    elif isinstance(op, WitnessSetProperties):
        body = (pack_string(op.owner) + varint(len(op.props))
                + b"".join(pack_string(k) + pack_bytes(v) for k, v in op.props) + varint(0))
    elif isinstance(op, Transfer):
        body = (pack_string(op.from_) + pack_string(op.to)
                + Amount(op.amount, op.asset).pack() + pack_string(op.memo))
    else:
        body = pack_string(op.account) + pack_string(op.witness) + bytes([op.approve])
    return varint(op.op_id) + body


def _key_bytes(key: str) -> bytes:
    try:
        return public_key_from_str(key)
    except InvalidKeyError as e:  # pragma: no cover - keys are checked when decoded
        raise reject(e.message) from e
