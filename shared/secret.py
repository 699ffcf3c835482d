"""A redacting wrapper for secrets read at start-up (passphrases, API tokens, WIFs)."""

from __future__ import annotations

from typing import NoReturn

__all__ = ["Secret"]


class Secret:
    """A string that must never be printed: redacted repr, no pickling, explicit reveal()."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value

    def reveal(self) -> str:
        """Return the secret itself; call only where it is consumed."""
        return self._value

    def __repr__(self) -> str:
        return "<Secret redacted>"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")
