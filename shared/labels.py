"""Human labels for chain keys in log lines: the configured node name next to the key."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from shared.chains import NULL_KEY

_SHOWN: Final = 12  # "STM" and enough of the key to tell keys apart in a log


class KeyLabels:
    """Labels keys with the node names of a service's config: ``STM8abcdefgh…(backup1)``."""

    def __init__(self, names: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
        """``names`` maps a public key to its node name (or is an iterable of such pairs)."""
        self._names = dict(names.items() if isinstance(names, Mapping) else names)

    def name(self, key: str | None) -> str | None:
        """The node name of ``key``, or None."""
        return None if key is None else self._names.get(key)

    def __call__(self, key: str | None) -> str:
        """``key`` shortened, with its node name; the null key and unknown keys say so."""
        if key is None:
            return "-"
        if key == NULL_KEY:
            return "the null key (disabled)"
        name = self._names.get(key)
        if name is None:
            return f"{key} (not a configured node)"
        return f"{key[:_SHOWN]}…({name})"
