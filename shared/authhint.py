"""The short reason a signer gives in its unsigned 401 answer: a hint for diagnosis, never proof.

A 401 answer cannot be signed for the request it refuses (there is no
authenticated request to bind it to), so whoever sits between the watcher and the
signer can forge or strip it. Clients show the reason to a human and never base a
decision on it. The set is deliberately coarse (docs/threat-model.md, "401
reasons"): every reason is decided before, or independently of, whether the
claimed keyid exists, so the answer is no oracle for the signer's clients.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

Reason = Literal["malformed", "stale", "bad_digest", "key_or_signature", "replay"]

REASONS: Final[frozenset[str]] = frozenset(get_args(Reason))

#: The field of the 401 body that carries the reason.
REASON_FIELD: Final = "reason"
