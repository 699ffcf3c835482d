"""Unit tests for the strict RFC 8941 structured-field parser and serializer (shared/sfv.py)."""

from __future__ import annotations

import base64

import pytest

from shared.errors import AuthError
from shared.sfv import (
    MAX_FIELD_CHARS,
    MAX_LIST_ITEMS,
    MAX_MEMBERS,
    MAX_PARAMS,
    DuplicateKeyError,
    InnerList,
    Item,
    Member,
    Token,
    b64decode_strict,
    param,
    parse_component_id,
    parse_dictionary,
    serialize_bare,
    serialize_item,
    serialize_member,
    serialize_params,
)


def raises_exactly(error: type[Exception], text: str) -> None:
    """parse_dictionary(text) raises ``error`` itself (not a sibling or a parent)."""
    with pytest.raises(AuthError) as caught:
        parse_dictionary(text)
    assert type(caught.value) is error, repr(caught.value)


@pytest.mark.parametrize("text", [
    pytest.param("a=1, a=2", id="key-twice"),
    pytest.param("a, a", id="bare-key-twice"),
    pytest.param("sig1=(), b=1, sig1=()", id="label-twice-apart"),
    pytest.param("a=1;x=1;x=2", id="item-parameter-twice"),
    pytest.param("a;x;x", id="bare-key-parameter-twice"),
    pytest.param("sig1=();created=1;created=2", id="signature-param-twice"),
    pytest.param('sig1=("@method";req;req)', id="component-parameter-twice"),
])
def test_duplicates_are_refused_not_resolved(text: str) -> None:
    """A key or parameter given twice is refused as DuplicateKeyError, never last-one-wins."""
    raises_exactly(DuplicateKeyError, text)


def test_same_parameter_name_on_different_items_is_fine() -> None:
    """Parameters are scoped to their item: the same name on two members is no duplicate."""
    parsed = parse_dictionary("a=1;x=1, b=2;x=2")
    assert parsed == {"a": Item(1, (("x", 1),)), "b": Item(2, (("x", 2),))}


@pytest.mark.parametrize(("count", "ok"), [(MAX_MEMBERS, True), (MAX_MEMBERS + 1, False)])
def test_member_limit(count: int, ok: bool) -> None:
    """Up to MAX_MEMBERS members parse; one more is refused (as a limit, not a duplicate)."""
    text = ", ".join(f"k{i}=1" for i in range(count))
    if ok:
        assert len(parse_dictionary(text)) == count
    else:
        raises_exactly(AuthError, text)


@pytest.mark.parametrize(("count", "ok"), [(MAX_PARAMS, True), (MAX_PARAMS + 1, False)])
def test_parameter_limit(count: int, ok: bool) -> None:
    """Up to MAX_PARAMS parameters parse; one more is refused (as a limit, not a duplicate)."""
    text = "a=1" + "".join(f";p{i}={i}" for i in range(count))
    if ok:
        member = parse_dictionary(text)["a"]
        assert member.params == tuple((f"p{i}", i) for i in range(count))
    else:
        raises_exactly(AuthError, text)


@pytest.mark.parametrize(("count", "ok"), [(MAX_LIST_ITEMS, True), (MAX_LIST_ITEMS + 1, False)])
def test_inner_list_limit(count: int, ok: bool) -> None:
    """Up to MAX_LIST_ITEMS items in an inner list parse; one more is refused."""
    text = "a=(" + " ".join(str(i) for i in range(count)) + ")"
    if ok:
        member = parse_dictionary(text)["a"]
        assert isinstance(member, InnerList)
        assert [i.value for i in member.items] == list(range(count))
    else:
        raises_exactly(AuthError, text)


def test_field_length_limit() -> None:
    """A field of MAX_FIELD_CHARS characters parses; one character more is refused."""
    text = "a=" + "1" * 10
    padded = text + " " * (MAX_FIELD_CHARS - len(text))
    assert parse_dictionary(padded) == {"a": Item(1_111_111_111)}
    raises_exactly(AuthError, padded + " ")


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("", {}, id="empty"),
    pytest.param("a=1", {"a": Item(1)}, id="integer"),
    pytest.param("a=-42", {"a": Item(-42)}, id="negative-integer"),
    pytest.param("a=999999999999999", {"a": Item(999_999_999_999_999)}, id="15-digits"),
    pytest.param("a=-999999999999999", {"a": Item(-999_999_999_999_999)},
                 id="negative-15-digits"),
    pytest.param('a="x \\"q\\" \\\\ y"', {"a": Item('x "q" \\ y')}, id="escaped-string"),
    pytest.param('a=""', {"a": Item("")}, id="empty-string"),
    pytest.param("a=tok/en:1", {"a": Item(Token("tok/en:1"))}, id="token"),
    pytest.param("a=*tok", {"a": Item(Token("*tok"))}, id="star-token"),
    pytest.param("a=:AAE=:", {"a": Item(b"\0\1")}, id="bytes"),
    pytest.param("a=::", {"a": Item(b"")}, id="empty-bytes"),
    pytest.param("a=?1, b=?0", {"a": Item(True), "b": Item(False)}, id="booleans"),
    pytest.param("a;p=2", {"a": Item(True, (("p", 2),))}, id="bare-key-with-params"),
    pytest.param("a=1;p;q=?0", {"a": Item(1, (("p", True), ("q", False)))}, id="params"),
    pytest.param("a=1; p=2", {"a": Item(1, (("p", 2),))}, id="space-before-param-key"),
    pytest.param("a=( 1  2 );p", {"a": InnerList((Item(1), Item(2)), (("p", True),))},
                 id="inner-list-spaces"),
    pytest.param("a=()", {"a": InnerList(())}, id="empty-inner-list"),
    pytest.param('a=("x";k="v")', {"a": InnerList((Item("x", (("k", "v"),)),))},
                 id="inner-item-params"),
    pytest.param("  a=1 ,\tb=2  ", {"a": Item(1), "b": Item(2)}, id="outer-whitespace"),
    pytest.param("*a.b-c_d=1", {"*a.b-c_d": Item(1)}, id="key-alphabet"),
    pytest.param("a=1,b=2", {"a": Item(1), "b": Item(2)}, id="no-space-after-comma"),
    pytest.param("a=tokX", {"a": Item(Token("tokX"))}, id="trailing-capital-kept"),
    pytest.param("a=(Xy Z)", {"a": InnerList((Item(Token("Xy")), Item(Token("Z"))))},
                 id="capital-tokens-in-inner-list"),
])
def test_accepted_values(text: str, expected: dict[str, Member]) -> None:
    """Each well-formed dictionary parses to exactly these members, in order."""
    parsed = parse_dictionary(text)
    assert parsed == expected
    assert list(parsed) == list(expected)


@pytest.mark.parametrize("text", [
    pytest.param("A=1", id="uppercase-key"),
    pytest.param("1a=1", id="key-starts-with-digit"),
    pytest.param("a=1.5", id="decimal"),
    pytest.param("a=1234567890123456", id="16-digits"),
    pytest.param("a=-1234567890123456", id="negative-16-digits"),
    pytest.param("a=-", id="lone-minus"),
    pytest.param('a="unterminated', id="unterminated-string"),
    pytest.param('a="tab\there"', id="control-in-string"),
    pytest.param('a="bad \\x escape"', id="bad-escape"),
    pytest.param("a=:AAE", id="unterminated-bytes"),
    pytest.param("a=:AAF=:", id="non-canonical-bytes"),
    pytest.param("a=?2", id="bad-boolean"),
    pytest.param("a=@x", id="not-an-item"),
    pytest.param("a=1 b=2", id="missing-comma"),
    pytest.param("a=1,", id="trailing-comma"),
    pytest.param("a=1, ", id="trailing-comma-space"),
    pytest.param("a=(1", id="unterminated-inner-list"),
    pytest.param("a=(1,2)", id="comma-in-inner-list"),
    pytest.param("a=(1\t2)", id="tab-in-inner-list"),
    pytest.param("a=1;", id="empty-parameter"),
    pytest.param("a=1;P=1", id="uppercase-parameter"),
    pytest.param("a=\u00e9", id="non-ascii"),
    pytest.param("\ta=1", id="leading-tab"),
    pytest.param("a=1X", id="junk-after-integer"),
    pytest.param("a=1,Xb=2", id="uppercase-key-after-comma"),
    pytest.param("a=1;Xp=1", id="uppercase-parameter-key"),
])
def test_malformed_values_raise_auth_error(text: str) -> None:
    """Every malformed dictionary raises AuthError itself (a parse error, not a duplicate)."""
    raises_exactly(AuthError, text)


def test_non_string_input_raises_auth_error() -> None:
    """A value that is not text at all is an AuthError, not a TypeError."""
    with pytest.raises(AuthError):
        parse_dictionary(b"a=1")  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("@method", Item("@method"), id="bare-name"),
    pytest.param('"signature";req;key="sig1"',
                 Item("signature", (("req", True), ("key", "sig1"))), id="with-params"),
])
def test_component_ids(text: str, expected: Item) -> None:
    """Component identifiers parse with or without quotes, keeping their parameters."""
    assert parse_component_id(text) == expected


@pytest.mark.parametrize("text", [
    pytest.param("@METHOD", id="uppercase"),
    pytest.param('"a" x', id="trailing-text"),
    pytest.param('"a";req;req', id="duplicate-parameter"),
    pytest.param('"a"1', id="junk-after-string"),
])
def test_bad_component_ids(text: str) -> None:
    """Uppercase names, trailing garbage or duplicate parameters are refused."""
    with pytest.raises(AuthError):
        parse_component_id(text)


@pytest.mark.parametrize("text", ["AA==", "AAE=", "AAEC", ""])
def test_b64decode_strict_accepts_canonical(text: str) -> None:
    """Canonical padded base64 round-trips."""
    assert b64decode_strict(text) == base64.b64decode(text)


@pytest.mark.parametrize("text", ["AB==", "AA=", "A", "AA==AA==", "AA-_", "AA ="])
def test_b64decode_strict_refuses_other_spellings(text: str) -> None:
    """Unpadded, non-canonical or non-alphabet base64 is refused."""
    with pytest.raises(AuthError):
        b64decode_strict(text)


@pytest.mark.parametrize(("value", "expected"), [
    pytest.param(True, "?1", id="true"),
    pytest.param(False, "?0", id="false"),
    pytest.param(0, "0", id="zero"),
    pytest.param(-999_999_999_999_999, "-999999999999999", id="min"),
    pytest.param(999_999_999_999_999, "999999999999999", id="max"),
    pytest.param(b"\0\1", ":AAE=:", id="bytes"),
    pytest.param(Token("ed25519"), "ed25519", id="token"),
    pytest.param('a "b" \\', '"a \\"b\\" \\\\"', id="string-escapes"),
])
def test_serialize_bare(value: bool | int | bytes | Token | str, expected: str) -> None:
    """Bare items serialize as RFC 8941 section 4.1 writes them."""
    assert serialize_bare(value) == expected


@pytest.mark.parametrize("value", [
    pytest.param(10**15, id="integer-too-large"),
    pytest.param(-(10**15), id="integer-too-small"),
    pytest.param(Token("1abc"), id="bad-token"),
    pytest.param("tab\t", id="control-in-string"),
    pytest.param("\u00e9", id="non-ascii-string"),
])
def test_serialize_bare_refuses_unrepresentable(value: int | Token | str) -> None:
    """Values outside the structured-field grammar cannot be serialized."""
    with pytest.raises(AuthError):
        serialize_bare(value)


def test_serialize_params_items_and_members() -> None:
    """A true parameter is the bare key; members serialize with their parameters."""
    assert serialize_params((("req", True), ("key", "sig1"), ("f", False))) == \
        ';req;key="sig1";f=?0'
    assert serialize_item(Item(Token("x"), (("a", 1),))) == "x;a=1"
    member = InnerList((Item("@method"), Item("x", (("req", True),))), (("created", 1),))
    assert serialize_member(member) == '("@method" "x";req);created=1'
    assert serialize_member(Item(5)) == "5"


def test_param_lookup() -> None:
    """param() returns the named parameter's value, or None when it is absent."""
    params = (("created", 1), ("flag", True), ("off", False))
    assert param(params, "created") == 1
    assert param(params, "flag") is True
    assert param(params, "off") is False
    assert param(params, "nonce") is None
