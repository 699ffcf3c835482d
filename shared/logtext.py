"""What the services write in log lines: keys labelled with node names, and state lines
logged on change (with a reminder) instead of at every poll."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable, Mapping
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

    def annotate(self, text: str) -> str:
        """``text`` with each configured key in it followed by its node name: ``STM… (backup1)``.

        For alert and log texts made by pure code that knows no node names; idempotent.
        """
        for key, name in self._names.items():
            if key in text and f"{key} ({name})" not in text:
                text = text.replace(key, f"{key} ({name})")
        return text


class ChangeLog:
    """Tells whether a state line is worth logging: on change, else once per ``reminder_s``.

    ``should_log(topic, value)`` is True the first time, whenever ``value`` differs from
    the last one logged for ``topic``, and when ``reminder_s`` passed since then.
    """

    def __init__(self, reminder_s: float = 300.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._reminder_s = reminder_s
        self._monotonic = monotonic
        self._last: dict[Hashable, tuple[Hashable, float]] = {}

    def should_log(self, topic: Hashable, value: Hashable) -> bool:
        """Whether to log ``value`` for ``topic`` now (and remember it if so)."""
        now = self._monotonic()
        last = self._last.get(topic)
        if last is not None and last[0] == value and now - last[1] < self._reminder_s:
            return False
        self._last[topic] = (value, now)
        return True

    def forget(self, topic: Hashable) -> None:
        """Log the next value of ``topic`` whatever it is (the condition ended)."""
        self._last.pop(topic, None)
