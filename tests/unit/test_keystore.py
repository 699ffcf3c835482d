"""Unit tests for the encrypted chain-key store (signer/keystore.py)."""

from __future__ import annotations

import base64
import copy
import getpass
import io
import json
import logging
import pickle
import sys
from pathlib import Path
from typing import Any

import pytest

# beembase/beemgraphenebase (not the banned `beem`): tests build and verify real
# transactions to prove what the keystore signs.
from beembase.signedtransactions import Signed_Transaction
from beemgraphenebase.account import PrivateKey, PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.chains import HIVE, STEEM
from shared.errors import ChainDataError, KeystoreError
from signer.keystore import (
    MEMLIMIT_MIN,
    OPSLIMIT_MIN,
    Keystore,
    PassphraseSource,
    Secret,
    _write_keystore,
    check_authority,
    create_keystore,
    read_passphrase,
    read_wif_noecho,
)

# The fixtures are read-only across Hypothesis examples, so reusing them is safe.
FIXTURE_REUSE = HealthCheck.function_scoped_fixture
FAST = {"opslimit": OPSLIMIT_MIN, "memlimit": MEMLIMIT_MIN}
PASS = Secret("correct horse battery staple")
# Fixed throwaway keys (never used on any chain).
ACTIVE_WIF = "5KCGh5zB3S36sc98aRUCJDyKVLsw1CjSzBg5HDg95mm9yx6m3U4"
SIGNING_WIF = "5Jt4o46PTqC2MdBWooUfKc1DxyUY5yJYxLdo3F5Q7UVpmJER764"


def _pub(wif: str) -> str:
    return str(PrivateKey(wif, prefix="STM").pubkey)


def _raw(wif: str) -> bytes:
    return bytes(PrivateKey(wif, prefix="STM"))


def _tx() -> Any:
    return Signed_Transaction(
        ref_block_num=4660,
        ref_block_prefix=305419896,
        expiration="2030-01-01T00:00:00",
        operations=[["transfer", {
            "from": "alice", "to": "bob", "memo": "",
            "amount": {"amount": "1000", "precision": 3, "nai": "@@000000021"},
        }]],
    )


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """A saved keystore holding one active and one signing key."""
    path = tmp_path / "chain.keystore"
    store = create_keystore(path, PASS, **FAST)
    store.add(Secret(ACTIVE_WIF), "active")
    store.add(SIGNING_WIF, "signing")
    store.save(PASS)
    return path


def test_file_holds_no_key_material(store_path: Path) -> None:
    """The keystore file contains no WIF, no key hex, no raw key bytes, no base64 of them."""
    data = store_path.read_bytes()
    for wif in (ACTIVE_WIF, SIGNING_WIF):
        raw = _raw(wif)
        for needle in (wif.encode(), raw.hex().encode(), raw.hex().upper().encode(), raw,
                       base64.b64encode(raw), base64.urlsafe_b64encode(raw),
                       base64.b64encode(raw).rstrip(b"=")):
            assert needle not in data


def test_file_is_mode_0600_and_no_temp_left(store_path: Path) -> None:
    """The keystore is written 0600 and the atomic write leaves no temporary file."""
    assert store_path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in store_path.parent.iterdir()] == [store_path.name]


def test_round_trip(store_path: Path) -> None:
    """Keys and roles saved are the keys and roles opened."""
    store = Keystore.open(store_path, PASS)
    assert store.public_keys() == sorted([_pub(ACTIVE_WIF), _pub(SIGNING_WIF)])
    assert store.public_keys("active") == [_pub(ACTIVE_WIF)]
    assert store.public_keys("signing") == [_pub(SIGNING_WIF)]


@settings(max_examples=15, deadline=None, suppress_health_check=[FIXTURE_REUSE])
@given(passphrase=st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1))
def test_any_passphrase_round_trips(
    tmp_path_factory: pytest.TempPathFactory, passphrase: str
) -> None:
    """Any non-empty Unicode passphrase encrypts and decrypts the same keys."""
    path = tmp_path_factory.mktemp("ks") / "chain.keystore"
    store = create_keystore(path, Secret(passphrase), **FAST)
    store.add(ACTIVE_WIF, "active")
    store.save(Secret(passphrase))
    assert Keystore.open(path, Secret(passphrase)).public_keys() == [_pub(ACTIVE_WIF)]


def test_wrong_passphrase_refused(store_path: Path) -> None:
    """A wrong passphrase is refused with KeystoreError, translated from nacl."""
    with pytest.raises(KeystoreError, match="wrong passphrase or corrupted keystore") as info:
        Keystore.open(store_path, Secret("not the passphrase"))
    assert type(info.value.__cause__).__module__.startswith("nacl")


@settings(max_examples=25, deadline=None, suppress_health_check=[FIXTURE_REUSE])
@given(bit=st.integers(min_value=0))
def test_any_single_bit_flip_in_box_refused(store_path: Path, bit: int) -> None:
    """Flipping any single bit of the nonce or ciphertext makes the keystore unreadable."""
    doc = json.loads(store_path.read_bytes())
    box = bytearray(base64.b64decode(doc["cipher"]["box"]))
    bit %= len(box) * 8
    box[bit // 8] ^= 1 << (bit % 8)
    tampered = copy.deepcopy(doc)
    tampered["cipher"]["box"] = base64.b64encode(bytes(box)).decode()
    path = store_path.with_name("tampered.keystore")
    path.write_text(json.dumps(tampered))
    path.chmod(0o600)
    with pytest.raises(KeystoreError, match="wrong passphrase or corrupted keystore"):
        Keystore.open(path, PASS)


def test_mislabelled_entry_refused(tmp_path: Path) -> None:
    """A payload whose public key does not match its WIF is refused, so no key signs as another."""
    path = tmp_path / "swapped.keystore"
    payload = {"keys": {_pub(SIGNING_WIF): {"role": "signing", "wif": ACTIVE_WIF}}}
    # The private writer is the only way to seal a hostile payload without importing nacl.
    _write_keystore(path, PASS, json.dumps(payload).encode(), OPSLIMIT_MIN, MEMLIMIT_MIN)
    with pytest.raises(KeystoreError, match="does not hold that key"):
        Keystore.open(path, PASS)


@pytest.mark.parametrize(("field", "value"), [
    pytest.param("memlimit", 1 << 40, id="memory-bomb"),
    pytest.param("opslimit", 0, id="zero-ops"),
    pytest.param("salt", base64.b64encode(b"short").decode(), id="short-salt"),
    pytest.param("name", "scrypt", id="other-kdf"),
])
def test_tampered_kdf_header_refused(store_path: Path, field: str, value: object) -> None:
    """KDF parameters outside the accepted range or shape are refused before any work."""
    doc = json.loads(store_path.read_bytes())
    doc["kdf"][field] = value
    store_path.write_text(json.dumps(doc))
    with pytest.raises(KeystoreError):
        Keystore.open(store_path, PASS)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620], ids=oct)
def test_unsafe_keystore_mode_refused(store_path: Path, mode: int) -> None:
    """A keystore readable or writable by group/others is refused, naming path, mode and fix."""
    store_path.chmod(mode)
    with pytest.raises(KeystoreError) as info:
        Keystore.open(store_path, PASS)
    message = str(info.value)
    assert str(store_path) in message
    assert f"{mode:04o}" in message
    assert "chmod 600" in message


@pytest.mark.parametrize("mode", [0o644, 0o640], ids=oct)
def test_unsafe_passphrase_file_mode_refused(tmp_path: Path, mode: int) -> None:
    """A passphrase file readable by group/others is refused, naming path, mode and fix."""
    secret_file = tmp_path / "signer.passphrase"
    secret_file.write_text("hunter2\n")
    secret_file.chmod(mode)
    with pytest.raises(KeystoreError) as info:
        read_passphrase(PassphraseSource.file(secret_file))
    assert str(secret_file) in str(info.value)
    assert f"{mode:04o}" in str(info.value)
    assert "chmod 600" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_missing_keystore_refused(tmp_path: Path) -> None:
    """Opening a path with no keystore is a KeystoreError."""
    with pytest.raises(KeystoreError, match="no keystore"):
        Keystore.open(tmp_path / "absent.keystore", PASS)


def test_create_refuses_to_overwrite(store_path: Path) -> None:
    """Creating a keystore over an existing one is refused and the old one survives."""
    with pytest.raises(KeystoreError, match="already exists"):
        create_keystore(store_path, PASS, **FAST)
    assert len(Keystore.open(store_path, PASS).public_keys()) == 2


@pytest.mark.parametrize(("content", "expected"), [
    pytest.param("pw\n", "pw", id="one-newline"),
    pytest.param("pw\r\n", "pw", id="crlf"),
    pytest.param("pw\n\n", "pw\n", id="only-one-stripped"),
    pytest.param(" pw ", " pw ", id="spaces-kept"),
])
def test_passphrase_file_strips_one_newline(tmp_path: Path, content: str, expected: str) -> None:
    """A credential file loses exactly one trailing newline and nothing else."""
    secret_file = tmp_path / "pass"
    secret_file.write_bytes(content.encode())
    secret_file.chmod(0o600)
    assert read_passphrase(PassphraseSource.file(secret_file)).reveal() == expected


def test_credential_directory_source(tmp_path: Path) -> None:
    """A systemd credential is read from $CREDENTIALS_DIRECTORY/<name> as passed in."""
    (tmp_path / "keystore").write_text("from-systemd\n")
    (tmp_path / "keystore").chmod(0o400)
    source = PassphraseSource.credential("keystore", str(tmp_path))
    assert read_passphrase(source).reveal() == "from-systemd"


@pytest.mark.parametrize("name", ["../etc/shadow", "a/b", "..", ""])
def test_credential_name_traversal_refused(tmp_path: Path, name: str) -> None:
    """A credential name that is not a plain file name is refused."""
    with pytest.raises(KeystoreError, match="plain file name"):
        PassphraseSource.credential(name, str(tmp_path))


def test_sources_tried_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unavailable sources (no TTY, no credential dir, missing file) fall through to the next."""
    monkeypatch.setattr(sys, "stdin", io.StringIO())
    sources = [
        PassphraseSource.tty(),
        PassphraseSource.credential("keystore", None),
        PassphraseSource.file(tmp_path / "missing"),
        PassphraseSource.env("WF_PASSPHRASE", None),
        PassphraseSource.env("WF_PASSPHRASE2", "last"),
    ]
    assert read_passphrase(sources).reveal() == "last"


def test_tty_source_prompts_without_echo(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a TTY the passphrase comes from getpass."""
    class _Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", _Tty())
    monkeypatch.setattr(getpass, "getpass", lambda prompt: "typed")
    assert read_passphrase([PassphraseSource.tty()]).reveal() == "typed"


def test_no_source_available_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no usable source at all, reading the passphrase is a KeystoreError."""
    monkeypatch.setattr(sys, "stdin", io.StringIO())
    with pytest.raises(KeystoreError, match="no passphrase source"):
        read_passphrase([PassphraseSource.tty(), PassphraseSource.env("X", None)])


def test_empty_passphrase_refused() -> None:
    """An empty passphrase is refused rather than used."""
    with pytest.raises(KeystoreError, match="empty passphrase"):
        read_passphrase(PassphraseSource.env("WF_PASSPHRASE", ""))


def test_env_passphrase_warns_without_leaking(caplog: pytest.LogCaptureFixture) -> None:
    """An env passphrase works, logs a WARNING naming the variable, never the value."""
    source = PassphraseSource.env("WF_KEYSTORE_PASSPHRASE", "s3cr3t-env-value")
    with caplog.at_level(logging.DEBUG):
        secret = read_passphrase(source)
    assert secret.reveal() == "s3cr3t-env-value"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings
    assert "WF_KEYSTORE_PASSPHRASE" in warnings[0].getMessage()
    assert "/proc" in warnings[0].getMessage()
    assert "s3cr3t-env-value" not in caplog.text
    assert "s3cr3t-env-value" not in repr(source)


def test_reprs_never_show_keys(store_path: Path) -> None:
    """repr/str/format of Secret, Keystore and signing handles never show a WIF."""
    store = Keystore.open(store_path, PASS)
    handle = store.private_key_for(_pub(ACTIVE_WIF))
    secret = Secret(ACTIVE_WIF)
    for text in (repr(secret), str(secret), f"{secret}", repr(store), str(store),
                 repr(handle), repr(PassphraseSource.env("X", ACTIVE_WIF)), repr([secret])):
        for wif in (ACTIVE_WIF, SIGNING_WIF):
            assert wif not in text
            assert _raw(wif).hex() not in text
    assert repr(secret) == "<Secret redacted>"


@pytest.mark.parametrize("obj", ["secret", "store", "handle"])
def test_key_objects_refuse_pickling(store_path: Path, obj: str) -> None:
    """Secrets, keystores and signing handles cannot be pickled to disk or a queue."""
    store = Keystore.open(store_path, PASS)
    target = {"secret": PASS, "store": store,
              "handle": store.private_key_for(_pub(SIGNING_WIF))}[obj]
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(target)


@pytest.mark.parametrize("bad", [
    pytest.param(ACTIVE_WIF[:-1] + ("1" if ACTIVE_WIF[-1] != "1" else "2"), id="bad-checksum"),
    pytest.param(ACTIVE_WIF[:20], id="truncated"),
    pytest.param("e7618151326eca27bda60f133e7c376d565219011f4dc5dfc1d02ece1bed806d", id="raw-hex"),
    pytest.param("STM7bw62NimCwr6ULgtB3matSDzSsA4wR4YF7kqU3VWPMWppqVuVA", id="public-key"),
    pytest.param("0OIl!", id="not-base58"),
    pytest.param("", id="empty"),
])
def test_invalid_wif_refused_without_echo(tmp_path: Path, bad: str) -> None:
    """An invalid WIF is a KeystoreError that neither echoes nor chains the input."""
    store = create_keystore(tmp_path / "k", PASS, **FAST)
    with pytest.raises(KeystoreError, match="not a valid WIF") as info:
        store.add(Secret(bad), "active")
    assert bad not in str(info.value) or not bad
    assert info.value.__cause__ is None
    assert info.value.__context__ is None
    assert store.public_keys() == []


def test_role_conflict_refused(tmp_path: Path) -> None:
    """The same key cannot be held under two roles."""
    store = create_keystore(tmp_path / "k", PASS, **FAST)
    store.add(ACTIVE_WIF, "active")
    with pytest.raises(KeystoreError, match="already held"):
        store.add(ACTIVE_WIF, "signing")


def test_unknown_role_refused(tmp_path: Path) -> None:
    """Only the roles 'active' and 'signing' exist."""
    store = create_keystore(tmp_path / "k", PASS, **FAST)
    with pytest.raises(KeystoreError, match="unknown role"):
        store.add(ACTIVE_WIF, "owner")  # type: ignore[arg-type]


def test_signature_verifies_for_the_explicit_chain_only(store_path: Path) -> None:
    """A signature verifies under its explicit chain id only; another id signs differently."""
    store = Keystore.open(store_path, PASS)
    pub = _pub(ACTIVE_WIF)
    hive_tx, steem_tx = _tx(), _tx()
    store.sign_transaction(hive_tx, pub, HIVE.chain_id)
    store.sign_transaction(steem_tx, pub, STEEM.chain_id)
    hive = {"chain_id": HIVE.chain_id, "prefix": "STM"}
    steem = {"chain_id": STEEM.chain_id, "prefix": "STM"}
    key = [PublicKey(pub, prefix="STM")]
    assert hive_tx.verify(key, chain=hive)
    assert steem_tx.verify(key, chain=steem)
    assert hive_tx.json()["signatures"] != steem_tx.json()["signatures"]
    # beem's verify raises a bare Exception when the signature is not for this chain.
    with pytest.raises(Exception, match=r"Signature for STM\w+ missing"):
        hive_tx.verify(key, chain=steem)
    assert not hasattr(hive_tx, "privkeys")


def test_signing_handle_signs_and_scrubs(store_path: Path) -> None:
    """The opaque handle signs for the explicit chain and leaves no WIF on the transaction."""
    handle = Keystore.open(store_path, PASS).private_key_for(_pub(SIGNING_WIF))
    tx = _tx()
    handle.sign_transaction(tx, HIVE.chain_id)
    assert tx.verify([PublicKey(handle.public_key, prefix="STM")],
                     chain={"chain_id": HIVE.chain_id, "prefix": "STM"})
    assert SIGNING_WIF not in repr(vars(tx))


@pytest.mark.parametrize("chain_id", ["HIVE", "", HIVE.chain_id.upper(), HIVE.chain_id[:-2],
                                      HIVE.chain_id + "00"])
def test_bad_chain_id_refused(store_path: Path, chain_id: str) -> None:
    """Only an explicit 64-hex-digit chain id is accepted, never a beem chain name."""
    store = Keystore.open(store_path, PASS)
    with pytest.raises(KeystoreError, match="chain id"):
        store.sign_transaction(_tx(), _pub(ACTIVE_WIF), chain_id)


def test_unknown_public_key_refused(store_path: Path) -> None:
    """Asking for a key the keystore does not hold is a KeystoreError."""
    with pytest.raises(KeystoreError, match="no private key"):
        Keystore.open(store_path, PASS).private_key_for(str(PrivateKey().pubkey))


def test_closed_keystore_cannot_sign(store_path: Path) -> None:
    """After close() the key bytes are gone and signing is refused."""
    with Keystore.open(store_path, PASS) as store:
        handle = store.private_key_for(_pub(ACTIVE_WIF))
    with pytest.raises(KeystoreError, match="closed"):
        handle.sign_transaction(_tx(), HIVE.chain_id)


def test_read_wif_noecho(monkeypatch: pytest.MonkeyPatch) -> None:
    """The WIF prompt uses getpass, strips whitespace and returns a Secret."""
    monkeypatch.setattr(getpass, "getpass", lambda prompt: f"  {ACTIVE_WIF}\n")
    secret = read_wif_noecho()
    assert isinstance(secret, Secret)
    assert secret.reveal() == ACTIVE_WIF


ALICE_KEY = "STM5HMzbeUowTNwkAkeL3x7UmoHZJJzDdrQZHDuy4fTr8Wai4XLVh"
OTHER_KEY = "STM7bw62NimCwr6ULgtB3matSDzSsA4wR4YF7kqU3VWPMWppqVuVA"


def _account(key_auths: list[Any], threshold: Any = 1) -> dict[str, Any]:
    return {"name": "alice", "active": {"weight_threshold": threshold, "account_auths": [],
                                        "key_auths": key_auths}}


NO_ACTIVE = (KeystoreError, "no active authority over alice")
MALFORMED = (ChainDataError, "malformed")


@pytest.mark.parametrize(("mode", "account", "node_keys"), [
    pytest.param("active", _account([[ALICE_KEY, 1]]), [], id="weight-at-threshold"),
    pytest.param("active", _account([[OTHER_KEY, 1], [ALICE_KEY, 3]], 2), [],
                 id="weight-above-threshold"),
    pytest.param("signing", {}, [OTHER_KEY, ALICE_KEY], id="configured-node-key"),
])
def test_authority_accepted(mode: str, account: dict[str, Any], node_keys: list[str]) -> None:
    """A key that alone satisfies the needed authority passes the import check."""
    check_authority(ALICE_KEY, mode, account, node_keys)


@pytest.mark.parametrize(("mode", "account", "node_keys", "expected"), [
    pytest.param("active", _account([[ALICE_KEY, 1]], 2), [], NO_ACTIVE,
                 id="weight-below-threshold"),
    pytest.param("active", _account([[OTHER_KEY, 1]]), [], NO_ACTIVE, id="key-absent"),
    pytest.param("active", _account([]), [ALICE_KEY], NO_ACTIVE, id="node-key-is-not-active"),
    pytest.param("signing", _account([[ALICE_KEY, 1]]), [OTHER_KEY],
                 (KeystoreError, "not one of the configured node keys"),
                 id="active-key-is-not-node-key"),
    pytest.param("owner", _account([[ALICE_KEY, 1]]), [], (KeystoreError, "unknown key mode"),
                 id="unknown-mode"),
    pytest.param("active", _account([[ALICE_KEY, 1]], 0), [], MALFORMED, id="zero-threshold"),
    pytest.param("active", _account([[ALICE_KEY, True]]), [], MALFORMED, id="bool-weight"),
    pytest.param("active", _account([ALICE_KEY]), [], MALFORMED, id="flat-key-auths"),
    pytest.param("active", {"name": "alice"}, [], (ChainDataError, "lacks"),
                 id="no-active-authority"),
])
def test_authority_refused(mode: str, account: dict[str, Any], node_keys: list[str],
                           expected: tuple[type[Exception], str]) -> None:
    """A key without the needed authority, or a malformed account, is refused with its class."""
    error, match = expected
    with pytest.raises(error, match=match):
        check_authority(ALICE_KEY, mode, account, node_keys)
