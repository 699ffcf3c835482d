"""RFC 8941 structured fields, narrowed to what the signing profile needs.

A strict parser and a serializer for Dictionaries, Inner Lists, Items and their
parameters. Everything that reads received data raises :class:`AuthError` and
nothing else. Narrower than RFC 8941 on purpose: no decimals, no display strings,
no duplicate keys or parameters (:class:`DuplicateKeyError`), nothing over a few
kilobytes. No crypto here.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from shared.errors import AuthError

__all__ = [
    "MAX_FIELD_CHARS",
    "MAX_LIST_ITEMS",
    "MAX_MEMBERS",
    "MAX_PARAMS",
    "BareItem",
    "DuplicateKeyError",
    "InnerList",
    "Item",
    "Member",
    "Params",
    "Token",
    "b64decode_strict",
    "param",
    "parse_component_id",
    "parse_dictionary",
    "serialize_bare",
    "serialize_item",
    "serialize_member",
    "serialize_params",
]

MAX_FIELD_CHARS, MAX_MEMBERS, MAX_LIST_ITEMS, MAX_PARAMS = 8192, 16, 32, 16

_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_INTEGER = re.compile(r"-?[0-9]+")
_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_BYTES = re.compile(r":([A-Za-z0-9+/=]*):")
_BOOLEAN = re.compile(r"\?[01]")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")


class DuplicateKeyError(AuthError):
    """A dictionary key or a parameter appears twice in one field: refused, not resolved."""


@dataclass(frozen=True)
class Token:
    """An RFC 8941 Token (``ed25519`` unquoted), kept apart from a String."""

    value: str


BareItem = bool | int | str | bytes | Token
Params = tuple[tuple[str, BareItem], ...]


@dataclass(frozen=True)
class Item:
    """A bare item with its parameters, in received order."""

    value: BareItem
    params: Params = ()


@dataclass(frozen=True)
class InnerList:
    """A parenthesised list of items with parameters of its own."""

    items: tuple[Item, ...]
    params: Params = ()


Member = Item | InnerList


def param(params: Params, name: str) -> BareItem | None:
    """The value of parameter ``name``, or None when it is absent."""
    return next((value for key, value in params if key == name), None)


class _Parser:
    """A cursor over one field value; each method consumes one grammar element."""

    def __init__(self, text: str) -> None:
        if not isinstance(text, str) or len(text) > MAX_FIELD_CHARS or not text.isascii():
            raise AuthError("structured field is not ASCII text of a sane length")
        self.text, self.pos = text.strip(" "), 0

    def error(self, what: str) -> AuthError:
        return AuthError(f"malformed structured field: {what} at offset {self.pos}")

    def peek(self) -> str:
        return self.text[self.pos:self.pos + 1]

    def match(self, pattern: re.Pattern[str], what: str) -> re.Match[str]:
        found = pattern.match(self.text, self.pos)
        if found is None:
            raise self.error(f"expected {what}")
        self.pos = found.end()
        return found

    def skip(self, chars: str) -> None:
        while self.peek() and self.peek() in chars:
            self.pos += 1

    def dictionary(self) -> dict[str, Member]:
        members: dict[str, Member] = {}
        while self.peek():
            key = self.match(_KEY, "a key").group()
            if key in members:
                # SECURITY: RFC 8941 lets the last duplicate win, other parsers may keep
                # the first; refusing duplicates removes an ambiguity attackers could use.
                raise DuplicateKeyError(f"duplicate key {key!r} at offset {self.pos}")
            if len(members) >= MAX_MEMBERS:
                raise self.error("too many members")
            if self.peek() == "=":
                self.pos += 1
                members[key] = self.inner_list() if self.peek() == "(" else self.item()
            else:
                members[key] = Item(True, self.params())
            self.skip(" \t")
            if not self.peek():
                break
            if self.peek() != ",":
                raise self.error("expected ','")
            self.pos += 1
            self.skip(" \t")
            if not self.peek():
                raise self.error("trailing ','")
        return members

    def inner_list(self) -> InnerList:
        self.pos += 1  # the "("
        items: list[Item] = []
        while True:
            self.skip(" ")
            if self.peek() == ")":
                self.pos += 1
                return InnerList(tuple(items), self.params())
            if len(items) >= MAX_LIST_ITEMS:
                raise self.error("too many list items")
            items.append(self.item())
            if self.peek() not in (" ", ")"):
                raise self.error("expected ' ' or ')'")

    def item(self) -> Item:
        return Item(self.bare_item(), self.params())

    def params(self) -> Params:
        out: dict[str, BareItem] = {}
        while self.peek() == ";":
            self.pos += 1
            self.skip(" ")
            key = self.match(_KEY, "a parameter key").group()
            if key in out:
                # SECURITY: as for keys: ";created=1;created=2" means one thing to us and
                # maybe another to the client's library, so it means nothing.
                raise DuplicateKeyError(f"duplicate parameter {key!r} at offset {self.pos}")
            if len(out) >= MAX_PARAMS:
                raise self.error("too many parameters")
            out[key] = True
            if self.peek() == "=":
                self.pos += 1
                out[key] = self.bare_item()
        return tuple(out.items())

    def bare_item(self) -> BareItem:
        first = self.peek()
        if first == "-" or first.isdigit():
            digits = self.match(_INTEGER, "an integer").group()
            if len(digits.lstrip("-")) > 15 or self.peek() == ".":
                raise self.error("integer too long, or a decimal")
            return int(digits)
        if first == '"':
            text = self.match(_STRING, "a string").group(1)
            return re.sub(r"\\([\"\\])", r"\1", text) if "\\" in text else text
        if first == ":":
            return b64decode_strict(self.match(_BYTES, "a byte sequence").group(1))
        if first == "?":
            return self.match(_BOOLEAN, "a boolean").group() == "?1"
        if first.isalpha() or first == "*":
            return Token(self.match(_TOKEN, "a token").group())
        raise self.error("expected an item")


def parse_dictionary(text: str) -> dict[str, Member]:
    """Parse an RFC 8941 Dictionary field value, strictly.

    Raises:
        AuthError: not a well-formed dictionary within our limits.
    """
    return _Parser(text).dictionary()


def parse_component_id(text: str) -> Item:
    """Turn ``@method`` or ``"signature";req;key="sig1"`` into a component identifier.

    Raises:
        AuthError: not a lowercase structured-field string with parameters.
    """
    parser = _Parser(text if text.startswith('"') else f'"{text}"')
    item = parser.item()
    if parser.peek() or not isinstance(item.value, str) or item.value != item.value.lower():
        raise parser.error("expected one lowercase component identifier")
    return item


def b64decode_strict(text: str) -> bytes:
    """Decode padded standard base64, refusing any non-canonical spelling.

    Raises:
        AuthError: invalid or non-canonical base64.
    """
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise AuthError("invalid base64") from e
    # SECURITY: otherwise flipping unused low bits of the last character would give a
    # second spelling of the same bytes: a changed Signature field that still verifies.
    if base64.b64encode(raw).decode("ascii") != text:
        raise AuthError("non-canonical base64")
    return raw


def serialize_bare(value: BareItem) -> str:
    """Serialize one bare item (RFC 8941 section 4.1).

    Raises:
        AuthError: the value cannot be represented (bad token or string, huge integer).
    """
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        if abs(value) >= 10**15:
            raise AuthError("integer out of structured-field range")
        return str(value)
    if isinstance(value, bytes):
        return ":" + base64.b64encode(value).decode("ascii") + ":"
    if isinstance(value, Token):
        if not _TOKEN.fullmatch(value.value):
            raise AuthError("invalid token")
        return value.value
    if not _PRINTABLE.fullmatch(value):
        raise AuthError("strings must be printable ASCII")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def serialize_params(params: Params) -> str:
    """Serialize parameters; a true boolean is written as the bare key."""
    return "".join(f";{k}" if v is True else f";{k}={serialize_bare(v)}" for k, v in params)


def serialize_item(item: Item) -> str:
    """Serialize an item with its parameters."""
    return serialize_bare(item.value) + serialize_params(item.params)


def serialize_member(member: Member) -> str:
    """Serialize a dictionary member's value, as RFC 9421 section 2.1.2 ``key=`` needs."""
    if isinstance(member, InnerList):
        inner = " ".join(serialize_item(item) for item in member.items)
        return f"({inner}){serialize_params(member.params)}"
    return serialize_item(member)
