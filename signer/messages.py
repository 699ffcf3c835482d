"""What clients send and what they get back: the failover and verdict bodies, the answers.

The body schema is applied only to bytes whose signature already verified.
Pure apart from :func:`describe_request`, which reads the store. The request's
states and their HTTP statuses belong to :mod:`signer.lifecycle`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn

from shared.chains import NULL_KEY
from shared.errors import RequestInvalidError
from signer.health import HealthSnapshot
from signer.lifecycle import http_status, refusal_detail, refusal_rule
from signer.operator_policy import (
    OPERATOR_KINDS,
    OperatorKind,
)
from signer.policy import (
    Approval,
    Decision,
    Evidence,
    EvidenceKind,
    FailoverAsk,
    Refuse,
    Switch,
)
from signer.records import Armed
from signer.store import RequestRecord, Store

log = logging.getLogger(__name__)


# --- the request body -------------------------------------------------------------------

_FIELDS = frozenset({"witness", "failing_key", "observed_total_missed", "reason", "target_key",
                     "dry_run", "request_id", "evidence"})
_EVIDENCE_FIELDS = frozenset({"kind", "node", "node_key", "since", "probes", "detail"})
_EVIDENCE_KINDS: tuple[EvidenceKind, ...] = ("node_down", "node_unhealthy")
_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_REQUIRED = ("witness", "failing_key", "observed_total_missed", "reason")
_ACCOUNT = re.compile(r"[a-z][a-z0-9.-]{2,15}")
_PUBLIC_KEY = re.compile(r"STM[1-9A-HJ-NP-Za-km-z]{30,60}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
# SECURITY: T8 — the audit store refuses WIF-like text; refuse it here, as bad input (422).
_WIF_LIKE = re.compile(r"5[HJK][1-9A-HJ-NP-Za-km-z]{49}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_REASON_MAX = 200
_MAX_INT = 2**63 - 1


def _invalid(message: str) -> NoReturn:
    raise RequestInvalidError(message, status=422)


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        # SECURITY: parsers disagree on which duplicate wins; refuse the ambiguity.
        _invalid("duplicate field")
    return doc


def _no_constant(name: str) -> NoReturn:
    _invalid(f"{name} is not JSON")


def parse_json_object(body: bytes) -> dict[str, object]:
    """Parse a verified body as one strict JSON object (UTF-8, no duplicates, no NaN).

    Raises:
        RequestInvalidError: not such an object (422).
    """
    try:
        doc = json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates,
                         parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise RequestInvalidError("the body is not one valid JSON document", status=422) from e
    if not isinstance(doc, dict):
        _invalid("the body must be a JSON object")
    return doc


def _text(doc: dict[str, object], name: str, pattern: re.Pattern[str]) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        _invalid(f"{name} is missing or malformed")
    return value


@dataclass(frozen=True)
class FailoverRequest:
    """A schema-checked failover body: the policy's question plus the idempotency data."""

    ask: FailoverAsk
    request_id: str | None
    digest: str  # sha-256 of the canonical body: a retried request_id must match it

    def idempotency_key(self, keyid: str, nonce: str) -> str:
        """The client's ``request_id`` if given, else the (single-use) nonce, per keyid."""
        if self.request_id is not None:
            return f"rid:{keyid}:{self.request_id}"
        return f"nonce:{keyid}:{nonce}"


def parse_failover(body: bytes) -> FailoverRequest:
    """Check a verified ``POST /v1/failover`` body against the schema; unknown fields refused.

    Raises:
        RequestInvalidError: any schema violation (422).
    """
    doc = parse_json_object(body)
    unknown = sorted(set(doc) - _FIELDS)
    if unknown:
        _invalid(f"unknown field {unknown[0][:40]!r}")
    missing = [name for name in _REQUIRED if name not in doc]
    if missing:
        _invalid(f"missing field {missing[0]!r}")
    witness = _text(doc, "witness", _ACCOUNT)
    failing_key = _text(doc, "failing_key", _PUBLIC_KEY)
    missed = doc["observed_total_missed"]
    if isinstance(missed, bool) or not isinstance(missed, int) or not 0 <= missed <= _MAX_INT:
        _invalid("observed_total_missed must be an integer >= 0")
    reason = doc["reason"]
    if not isinstance(reason, str) or len(reason) > _REASON_MAX or _CONTROL.search(reason):
        _invalid(f"reason must be a string of at most {_REASON_MAX} printable characters")
    if _WIF_LIKE.search(reason):
        _invalid("reason looks like it contains a private key")
    target = None if doc.get("target_key") is None else _text(doc, "target_key", _PUBLIC_KEY)
    dry_run = doc.get("dry_run", False)
    if not isinstance(dry_run, bool):
        _invalid("dry_run must be true or false")
    request_id = None if doc.get("request_id") is None else _text(doc, "request_id",
                                                                 _REQUEST_ID)
    evidence = None if doc.get("evidence") is None else _evidence(doc["evidence"], failing_key)
    ask = FailoverAsk(witness, failing_key, missed, reason, target, dry_run, evidence)
    canonical = json.dumps({**doc, "dry_run": dry_run, "target_key": target,
                            "evidence": None if evidence is None else evidence.as_json()},
                           sort_keys=True)
    return FailoverRequest(ask, request_id, hashlib.sha256(canonical.encode()).hexdigest())


def _evidence(value: object, failing_key: str) -> Evidence:
    """The ``evidence`` object of a pre-emptive request; unknown fields refused.

    Raises:
        RequestInvalidError: any schema violation (422).
    """
    if not isinstance(value, dict):
        _invalid("evidence must be an object")
    unknown = sorted(set(value) - _EVIDENCE_FIELDS)
    if unknown:
        _invalid(f"unknown field 'evidence.{unknown[0][:40]}'")
    missing = sorted(_EVIDENCE_FIELDS - set(value))
    if missing:
        _invalid(f"missing field 'evidence.{missing[0]}'")
    kind = value["kind"]
    if kind not in _EVIDENCE_KINDS:
        _invalid("evidence.kind must be 'node_down' or 'node_unhealthy'")
    node = _text(value, "node", _NODE_NAME)
    node_key = _text(value, "node_key", _PUBLIC_KEY)
    if node_key != failing_key:
        _invalid("evidence.node_key must equal failing_key")
    since, probes = value["since"], value["probes"]
    if isinstance(since, bool) or not isinstance(since, int) or not 0 <= since <= _MAX_INT:
        _invalid("evidence.since must be an integer >= 0 (unix seconds)")
    if isinstance(probes, bool) or not isinstance(probes, int) or not 1 <= probes <= 1_000_000:
        _invalid("evidence.probes must be an integer >= 1")
    detail = value["detail"]
    if not isinstance(detail, str) or len(detail) > _REASON_MAX or _CONTROL.search(detail):
        _invalid(f"evidence.detail must be a string of at most {_REASON_MAX} printable "
                 "characters")
    if _WIF_LIKE.search(detail):
        _invalid("evidence.detail looks like it contains a private key")
    return Evidence(kind, node, node_key, since, probes, detail)


def parse_verdict(body: bytes) -> str:
    """The optional operator note of an approve/deny body: empty, or ``{"note": "..."}``.

    Raises:
        RequestInvalidError: anything else (422).
    """
    if not body.strip():
        return ""
    doc = parse_json_object(body)
    if set(doc) - {"note"}:
        _invalid("only a note may accompany a verdict")
    return checked_note(doc.get("note", ""))


def checked_note(note: object) -> str:
    """``note`` if it is a short printable string holding nothing like a key.

    Raises:
        RequestInvalidError: anything else (422).
    """
    if not isinstance(note, str) or len(note) > _REASON_MAX or _CONTROL.search(note) or (
            _WIF_LIKE.search(note)):
        _invalid(f"note must be a string of at most {_REASON_MAX} printable characters")
    return note


@dataclass(frozen=True)
class OperatorCommand:
    """A schema-checked operator command: its verb, the node it names, the cooldown override."""

    kind: OperatorKind
    to: str | None
    force: bool
    note: str
    digest: str


_NODE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def parse_operator(kind: str, body: bytes) -> OperatorCommand:
    """Check a verified ``POST /v1/operator/<kind>`` body: ``{"to", "force", "note"}``.

    ``switch`` and ``enable`` need ``to`` (a node name); ``arm`` and ``disable`` refuse it.

    Raises:
        RequestInvalidError: an unknown verb (404) or any schema violation (422).
    """
    verb = next((k for k in OPERATOR_KINDS if k == kind), None)
    if verb is None:
        raise RequestInvalidError(f"no operator command {kind[:20]!r}", status=404)
    doc = parse_json_object(body) if body.strip() else {}
    unknown = sorted(set(doc) - {"to", "force", "note"})
    if unknown:
        _invalid(f"unknown field {unknown[0][:40]!r}")
    to = doc.get("to")
    if verb in ("switch", "enable"):
        if not isinstance(to, str) or not _NODE_NAME.fullmatch(to):
            _invalid(f"{verb} needs \"to\": the name of a configured node")
    elif to is not None:
        _invalid(f"{verb} takes no \"to\"")
    force = doc.get("force", False)
    if not isinstance(force, bool):
        _invalid("force must be true or false")
    note = checked_note(doc.get("note", ""))
    canonical = json.dumps({"kind": verb, "to": to, "force": force, "note": note},
                           sort_keys=True)
    return OperatorCommand(verb, to if isinstance(to, str) else None, force, note,
                           hashlib.sha256(canonical.encode()).hexdigest())


# --- answers ---------------------------------------------------------------------------


def describe_request(store: Store, record: RequestRecord) -> dict[str, object]:
    """The JSON answer describing one request (ids, state, key, tx, deadlines, detail)."""
    body: dict[str, object] = {
        "request_id": record.id, "state": record.state, "target_key": record.target_key,
        "failing_key": record.failing_key, "tx_id": None, "block_num": None,
        "created_at": record.created_at.isoformat(), "updated_at": record.updated_at.isoformat(),
    }
    for name, value in (("approve_by", record.approve_by), ("execute_at", record.execute_at),
                        ("decided_by", record.decided_by), ("detail", record.detail)):
        if value:
            body[name] = value.isoformat() if isinstance(value, datetime) else value
    if record.kind != "failover":
        body["kind"] = record.kind
    if record.state == "confirmed":
        for switch in store.switches(record.created_at):
            if switch.request_id == record.id:
                body.update(tx_id=switch.tx_id, block_num=switch.block_num)
    elif record.state == "broadcast":
        for item in store.unresolved_broadcasts():
            if item.request.id == record.id and item.attempts:
                body["tx_id"] = item.attempts[-1].tx_id
    body.update(health_fields(store, record))
    return body


def node_label(names: Mapping[str, str], key: str | None) -> str:
    """A node's name for ``key``; an unknown key abbreviated; ``-`` for none."""
    if not key:
        return "-"
    if key == NULL_KEY:
        return "null key (disabled)"
    return names.get(key) or f"{key[:9]}…{key[-4:]} (not a configured node)"


def pending_summary(store: Store, record: RequestRecord, names: Mapping[str, str],
                    armed: Armed | None) -> dict[str, object]:
    """What an operator needs to decide on a pending request, with node names, as JSON."""
    asked = next(iter(store.request_audit(record.id, "request")), {}).get("data", {})
    chain_missed = asked.get("chain_total_missed")
    misses = (chain_missed - armed.baseline_missed
              if isinstance(chain_missed, int) and armed is not None else None)
    deadline = record.approve_by or record.execute_at
    return {"request_id": record.id, "kind": record.kind, "client": record.client_keyid,
            "failing_key": record.failing_key, "target_key": record.target_key,
            "failing_node": node_label(names, record.failing_key),
            "target_node": node_label(names, record.target_key),
            "misses_since_armed": misses, "evidence": str(asked.get("reason", "")),
            "deadline": deadline.isoformat() if deadline else None,
            "deadline_kind": "approve_by" if record.approve_by else "execute_at",
            "created_at": record.created_at.isoformat()}


def pending_line(doc: Mapping[str, object]) -> str:
    """One readable line for a :func:`pending_summary`: id, nodes, misses, evidence, deadline."""
    deadline = doc.get("deadline")
    when = "" if not isinstance(deadline, str) else (
        f"approve by {deadline[11:19]}Z" if doc.get("deadline_kind") == "approve_by"
        else f"runs at {deadline[11:19]}Z unless denied")
    misses = doc.get("misses_since_armed")
    evidence = str(doc.get("evidence") or "")[:60]
    return (f"{str(doc.get('request_id', ''))[:12]}  {doc.get('failing_node')} -> "
            f"{doc.get('target_node')}  "
            f"{'?' if misses is None else misses} miss(es) since armed  {when}  "
            f"from {doc.get('client')}" + (f"  ({evidence})" if evidence else ""))


def request_evidence(store: Store, record: RequestRecord) -> Evidence | None:
    """The watcher's evidence the request carried, from its audit line (None: reactive)."""
    for line in store.request_audit(record.id, "request"):
        doc = line["data"].get("evidence")
        if isinstance(doc, dict):
            return Evidence(doc["kind"], doc["node"], doc["node_key"], doc["since"],
                            doc["probes"], doc["detail"])
    return None


def health_fields(store: Store, record: RequestRecord) -> dict[str, object]:
    """``preemptive``, ``evidence`` and the signer's latest ``health`` view of a request.

    Empty for a request that carried no evidence and was decided without probes.
    """
    out: dict[str, object] = {}
    evidence = request_evidence(store, record)
    if evidence is not None:
        out.update(preemptive=True, evidence=evidence.as_json())
    views = store.request_audit(record.id, "health")
    if views:
        data = views[-1]["data"]
        out["health"] = data.get("health")
        out["health_stage"] = data.get("stage")
        out.setdefault("preemptive", bool(data.get("preemptive")))
    return out


def health_text(evidence: Evidence | None, health: HealthSnapshot | None) -> str:
    """The health evidence in one line for an operator ("" when there is none)."""
    parts = []
    if evidence is not None:
        parts.append(f"pre-emptive: watcher says {evidence.node} {evidence.kind} for "
                     f"{evidence.probes} probes ({evidence.detail})")
    if health is not None:
        parts.append(f"signer sees {health.summary()}")
    return "; ".join(parts)


def pending_notice(witness: str, request_id: str, what: str, plan: Approval, *,
                   evidence: Evidence | None = None,
                   health: HealthSnapshot | None = None) -> str:
    """The text telling an operator that a request waits for a verdict, until when, and
    on which health evidence (for a pre-emptive request or when nodes are probed)."""
    when = (f"approve before {plan.expires_at:%H:%M:%S}Z" if plan.mode == "manual"
            else f"executes at {plan.execute_at:%H:%M:%S}Z unless denied")
    seen = health_text(evidence, health)
    return (f"{witness}: failover {what} needs an operator: request {request_id}, {when} "
            f"(witness-signer approve/deny){'; ' + seen if seen else ''}")


def dry_run_answer(decision: Decision, ask: FailoverAsk, approval: str
                   ) -> tuple[int, dict[str, object]]:
    """The (status, body) of a dry run: what a real request would get, nothing stored.

    A refusal keeps its status (409/429/403); a would-be switch or disable is 200.
    """
    body: dict[str, object] = {"request_id": None, "state": "dry_run", "dry_run": True,
                               "approval": approval, "failing_key": ask.failing_key,
                               "target_key": None}
    if isinstance(decision, Refuse):
        body.update(decision="refuse", detail=refusal_detail(decision))
        return http_status("refused", refusal_rule(decision)), body
    if isinstance(decision, Switch):
        body.update(decision="switch", target_key=decision.target_key, detail=decision.reason)
    else:
        body.update(decision="disable", detail=decision.reason)
    return 200, body
