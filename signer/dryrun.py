"""The dry run: the key change the signer would make next, built, signed and checked, never sent.

``witness-signer dry-run`` rehearses a switch against the configured (real) chain:
it checks the nodes' chain id, reads the witness, picks the target exactly as
:func:`signer.policy.decide` would, except that the evidence rule (misses since
the armed baseline) is taken as met, builds and signs the very transaction the
worker would broadcast (:meth:`RpcSignerChain.build`, fresh TaPoS), then checks
it from its JSON alone: the signature recovered against the explicit chain id,
the recovered key against the authority the chain requires. Nothing is broadcast
and nothing is written to the signer's state.

SECURITY: the signed transaction never leaves :func:`dry_run`. A signed key change
is valid on chain for up to an hour: printed on a terminal, pasted in a ticket or
left in a scroll-back it could be broadcast by anyone who sees it. The report keeps
the operation, the unsigned transaction, its digest and the verified signer key —
everything an operator checks — and drops the signatures.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

# The one check beem's JSON parser and signature recovery do better than a re-implementation;
# the import stays beside signer/chain.py's serialiser on the signer side of the boundary.
from beembase.signedtransactions import Signed_Transaction
from beemgraphenebase.account import PublicKey

from shared.chains import ADDRESS_PREFIX, NULL_KEY, ChainProfile
from shared.clock import Clock
from shared.errors import ChainDataError, ChainUnavailableError, KeystoreError
from shared.rpc import HeadTracker, JsonRpcClient
from signer.authority import check_authority
from signer.chain import RpcSignerChain
from signer.config import SignerConfig
from signer.keystore import Keystore
from signer.policy import (
    ChainView,
    Decision,
    FailoverAsk,
    History,
    PolicyConfig,
    Refuse,
    Switch,
    decide,
)
from signer.ports import BuiltTransaction

__all__ = [
    "EVIDENCE_NOTE",
    "DryRunReport",
    "Rehearsal",
    "dry_run",
    "pick_target",
    "read_account",
    "recover_signers",
    "render_text",
    "verify_authority",
]

log = logging.getLogger(__name__)

EVIDENCE_NOTE = ("the evidence rule is NOT applied: the dry run assumes the on-chain key is "
                 "armed with policy.min_missed new misses; every other rule (witness, quorum, "
                 "foreign key, rate limit, cooldown, rotation) is applied")


@dataclass(frozen=True)
class Rehearsal:
    """The transaction a dry run built and verified, without its signatures (not broadcastable)."""

    tx_id: str
    digest: str  # hex sha256(chain_id || packed tx): what the key signed
    operation: str  # "witness_update" or "witness_set_properties"
    expiration: datetime
    unsigned_tx: dict[str, Any]  # condenser JSON, "signatures" emptied

    @classmethod
    def of(cls, tx: BuiltTransaction, digest: str) -> Rehearsal:
        """Everything of ``tx`` but its signatures."""
        unsigned = {k: v for k, v in json.loads(json.dumps(tx.tx_json)).items()
                    if k != "signatures"}
        return cls(tx.tx_id, digest, tx.operation, tx.expiration, {**unsigned, "signatures": []})

    @property
    def operation_json(self) -> Any:
        """The operation as ``[name, body]`` (condenser JSON)."""
        ops = self.unsigned_tx.get("operations")
        return ops[0] if isinstance(ops, list) and len(ops) == 1 else ops


@dataclass(frozen=True)
class DryRunReport:
    """What a dry run found and built; ``tx`` is None when the policy refuses."""

    witness: str
    chain: str
    chain_id: str
    key_mode: str
    view: ChainView
    decision: str  # "switch", "disable" or "refuse"
    detail: str
    target_key: str | None
    tx: Rehearsal | None = None  # SECURITY: never the signed transaction
    recovered_keys: tuple[str, ...] = ()
    authority: str = ""
    notes: tuple[str, ...] = field(default=(EVIDENCE_NOTE,))

    def as_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict; ``broadcast`` is always false, no signature in it."""
        v = self.view
        return {"witness": self.witness, "chain": self.chain, "chain_id": self.chain_id,
                "key_mode": self.key_mode, "broadcast": False,
                "chain_view": {"head_block_num": v.head_block_num,
                               "signing_key": v.signing_key, "total_missed": v.total_missed,
                               "nodes_agreeing": v.nodes_agreeing},
                "decision": self.decision, "detail": self.detail, "target_key": self.target_key,
                "operation": self.tx.operation if self.tx else None,
                "tx_id": self.tx.tx_id if self.tx else None,
                "expiration": self.tx.expiration.isoformat() if self.tx else None,
                "operation_json": self.tx.operation_json if self.tx else None,
                "unsigned_tx": self.tx.unsigned_tx if self.tx else None,
                "digest": self.tx.digest if self.tx else None,
                "signature_verified": self.tx is not None,
                "recovered_signing_keys": list(self.recovered_keys),
                "authority": self.authority, "notes": list(self.notes)}


def dry_run(config: SignerConfig, keystore: Keystore, *, history: History | None,
            clock: Clock) -> DryRunReport:
    """Check the chain id, read the witness, build, sign and verify the next switch; no broadcast.

    Raises:
        ChainDataError: a node is on another chain, the nodes disagree, or the built
            transaction does not verify.
        ChainUnavailableError: too few nodes answered.
        KeystoreError: no key for the mode, or the key lacks the authority.
        PolicyError: the chain's witness cannot be switched in this mode.
    """
    rpc = JsonRpcClient(config.rpc_nodes, timeout_s=config.rpc_timeout_s)
    chain = RpcSignerChain(rpc, keystore, profile=config.chain, witness=config.policy.witness,
                           key_mode=config.policy.key_mode, quorum=config.quorum,
                           tracker=HeadTracker(config.stale_after),
                           tx_expiration=config.tx_expiration, clock=clock)
    chain.check_chain_id()  # SECURITY: T6 — before anything is read or signed
    reading = chain.read_witness()  # one read: the decision and the build both use it
    view = reading.view
    name, detail, target = _describe(pick_target(view, history, config.policy, clock.now(),
                                                quorum=config.quorum))
    names = {k.public_key: k.name for k in config.node_keys}
    if name == "switch":
        detail = (f"from {names.get(view.signing_key)} to {names.get(target or '')}, the next "
                  "configured key after the on-chain one")
    report = DryRunReport(witness=config.policy.witness, chain=config.chain.name,
                          chain_id=config.chain.chain_id, key_mode=config.policy.key_mode,
                          view=view, decision=name, detail=detail, target_key=target)
    if target is None:
        return report
    tx = chain.build(reading, target)  # what the worker would broadcast, same call
    tx_id, digest, recovered = recover_signers(tx.tx_json, config.chain.chain_id)
    if tx_id != tx.tx_id:
        raise ChainDataError(f"the JSON of tx {tx.tx_id} packs to another id, {tx_id}")
    account = (read_account(rpc, config.chain, config.policy.witness)
               if config.policy.key_mode == "active" else None)
    authority = verify_authority(tx, recovered, view, key_mode=config.policy.key_mode,
                                 account=account, node_keys=config.policy.node_keys)
    log.info("dry run built tx %s (%s -> %s), verified, not broadcast", tx.tx_id,
             view.signing_key, target)
    return replace(report, tx=Rehearsal.of(tx, digest), recovered_keys=recovered,
                   authority=authority)


def pick_target(view: ChainView, history: History | None, policy: PolicyConfig, now: datetime,
                *, quorum: int) -> Decision:
    """The policy's decision for a switch away from the on-chain key, evidence assumed; pure.

    ``history`` supplies past switches and rotation rounds (None: a signer never armed).
    """
    times = history.switch_times if history else ()
    rounds = history.rounds if history else 0
    # Exactly min_missed new misses on the current key: the evidence rule passes, no other.
    assumed = History(view.total_missed - policy.min_missed, view.signing_key, times, rounds)
    ask = FailoverAsk(witness=policy.witness, failing_key=view.signing_key,
                      observed_total_missed=view.total_missed, reason="dry run", dry_run=True)
    return decide(ask, view, assumed, policy, now, quorum=quorum)


def _describe(decision: Decision) -> tuple[str, str, str | None]:
    """(decision name, detail, target key or None) of ``decision``."""
    if isinstance(decision, Refuse):
        return "refuse", decision.reason, None
    if isinstance(decision, Switch):
        return "switch", decision.reason, decision.target_key
    return "disable", "rotation exhausted: on_exhausted = 'disable' sets the null key", NULL_KEY


def recover_signers(tx_json: Mapping[str, Any], chain_id: str
                    ) -> tuple[str, str, tuple[str, ...]]:
    """(tx id, hex signature digest, public keys that signed) of a transaction's JSON.

    The JSON is re-packed, so the keys are those a node would recover from what it receives.

    Raises:
        ChainDataError: the JSON cannot be packed or a signature does not recover a key.
    """
    chain = {"chain_id": chain_id, "prefix": ADDRESS_PREFIX}  # never beem's default ids
    try:
        tx = Signed_Transaction(**json.loads(json.dumps(tx_json)))
        tx_id = str(tx.id)
        found = tx.verify([], chain=chain, recover_parameter=True)
        keys = tuple(str(PublicKey(k, prefix=ADDRESS_PREFIX)) for k in found)
        digest = bytes(tx.digest).hex()  # verify() derived it: sha256(chain id || packed tx)
    except Exception as e:  # beem raises bare Exception/AssertionError/ValueError
        raise ChainDataError(f"the signed transaction does not verify: {type(e).__name__}"
                             ) from e
    if not keys:
        raise ChainDataError("the transaction carries no signature")
    return tx_id, digest, keys


def verify_authority(tx: BuiltTransaction, recovered: Sequence[str], view: ChainView, *,
                     key_mode: str, account: Mapping[str, Any] | None,
                     node_keys: Sequence[str]) -> str:
    """Check the recovered keys satisfy the authority ``tx`` needs; describe how. Pure.

    witness_update: a recovered key alone meets the account's active threshold.
    witness_set_properties: the recovered key is the current signing key, named in ``props.key``.

    Raises:
        KeystoreError: no recovered key holds the authority.
        ChainDataError: the account or the operation is malformed.
    """
    if key_mode == "signing":
        op = _only_operation(tx)
        named = _props_key(op)
        # SECURITY: hived checks the signature against props.key, and props.key against the
        # witness's current signing key (witness_set_properties_evaluator).
        if named != view.signing_key:
            raise KeystoreError(f"props.key {named} is not the current signing key "
                                f"{view.signing_key}")
        if named not in recovered:
            raise KeystoreError(f"witness_set_properties is not signed by props.key {named}")
        return f"signed by {named}: props.key, the witness's current signing key"
    if account is None:
        raise ChainDataError("no account object to check the active authority against")
    failures: list[str] = []
    for key in recovered:
        try:
            check_authority(key, "active", account, node_keys)
        except KeystoreError as e:
            failures.append(str(e))
            continue
        active = account["active"]
        weight = next(w for k, w in active["key_auths"] if k == key)
        return (f"active key {key}: weight {weight} >= threshold "
                f"{active['weight_threshold']} of {account['name']}")
    raise KeystoreError("; ".join(failures) or "no key signed the transaction")


def _only_operation(tx: BuiltTransaction) -> dict[str, Any]:
    ops = tx.tx_json.get("operations")
    if not (isinstance(ops, list) and len(ops) == 1 and isinstance(ops[0], list)
            and len(ops[0]) == 2 and isinstance(ops[0][1], dict)):
        raise ChainDataError("the transaction does not hold exactly one operation")
    return ops[0][1]


def _props_key(op: Mapping[str, Any]) -> str:
    """The public key in witness_set_properties' ``props.key`` (beem's JSON packs it as hex)."""
    try:
        value = dict(op["props"])["key"]
        return str(PublicKey(str(value), prefix=ADDRESS_PREFIX))
    except Exception as e:  # beem raises bare AssertionError/ValueError on bad keys
        raise ChainDataError("witness_set_properties carries no valid props.key") from e


def read_account(rpc: JsonRpcClient, profile: ChainProfile, account: str) -> dict[str, Any]:
    """``account`` from the first node that proves it is on ``profile``'s chain.

    Raises:
        ChainDataError: a node is on another chain, or the account does not exist.
        ChainUnavailableError: no node answered.
    """
    for url in rpc.urls:
        try:
            chain_id = rpc.chain_id(url)
            # SECURITY: T6 — an account read from another chain proves nothing about this one.
            accounts = None if chain_id != profile.chain_id else rpc.call_node(
                url, "condenser_api.get_accounts", [[account]])
        except ChainUnavailableError as e:
            log.warning("node unavailable: %s", e)
            continue
        if accounts is None:
            raise ChainDataError(f"{url} is on chain {chain_id}, not {profile.name}")
        if not (isinstance(accounts, list) and len(accounts) == 1
                and isinstance(accounts[0], dict)):
            raise ChainDataError(f"{url}: no account {account!r}")
        return accounts[0]
    raise ChainUnavailableError("no RPC node answered the account read")


def render_text(report: DryRunReport) -> str:
    """The operation's JSON, then the human summary; never a signature."""
    v = report.view
    lines = [] if report.tx is None else [
        json.dumps(report.tx.operation_json, indent=2, sort_keys=True)]
    lines += [f"DRY RUN for {report.witness} on {report.chain} (chain id {report.chain_id}): "
             "nothing was broadcast",
             f"  chain:      head #{v.head_block_num}, key {v.signing_key}, total_missed "
             f"{v.total_missed}, {v.nodes_agreeing} node(s) agreeing",
             f"  decision:   {report.decision}: {report.detail}"]
    if report.tx is not None:
        tx = report.tx
        lines += [f"  would send: {tx.operation} -> {report.target_key} (the JSON above)",
                  f"  tx id:      {tx.tx_id}, expires {tx.expiration:%Y-%m-%dT%H:%M:%S} "
                  "(chain time)",
                  f"  digest:     {tx.digest} (sha256 of chain id and packed tx)",
                  f"  signature:  signature verified against chain id {report.chain_id}, "
                  f"signed by {', '.join(report.recovered_keys)}",
                  f"  authority:  {report.authority}",
                  "  signatures: not shown: a signed key change could be broadcast by anyone "
                  "who sees it"]
    lines += [f"  note:       {n}" for n in report.notes]
    return "\n".join(lines)
