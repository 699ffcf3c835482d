"""Typed, field-naming access to parsed TOML, for every service's config module."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shared.errors import ConfigError

_REQUIRED: Any = object()


def resolve_path(base: Path, value: str) -> Path:
    """``value`` as a path, relative to the config file's directory when relative."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


class Fields:
    """Dotted access to a TOML document; every error names the file and field."""

    def __init__(self, raw: dict[str, Any], path: Path, prefix: str = "",
                 known: Iterable[str] | None = None) -> None:
        self.raw = raw
        self.path = path
        self.prefix = prefix
        if known is not None:
            unknown = sorted(set(raw) - set(known))
            if unknown:
                raise ConfigError(f"unknown section or field {unknown[0]!r}", path=str(path),
                                  field=prefix + unknown[0])

    def fail(self, dotted: str, message: str) -> ConfigError:
        """A ConfigError for field ``dotted``."""
        return ConfigError(message, path=str(self.path), field=self.prefix + dotted)

    def get(self, dotted: str, default: Any = _REQUIRED) -> Any:
        """The raw value at ``dotted``, ``default`` when absent.

        Raises:
            ConfigError: absent and required.
        """
        node: Any = self.raw
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                if default is _REQUIRED:
                    raise self.fail(dotted, "is required")
                return default
            node = node[part]
        return node

    def str(self, dotted: str, default: Any = _REQUIRED) -> str:
        """A non-empty string."""
        value = self.get(dotted, default)
        if not isinstance(value, str) or not value:
            raise self.fail(dotted, "must be a non-empty string")
        return value

    def opt_str(self, dotted: str) -> str | None:
        """A string, or None when absent or empty."""
        value = self.get(dotted, None)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self.fail(dotted, "must be a string")
        return value

    def choice(self, dotted: str, options: tuple[str, ...], default: Any = _REQUIRED) -> str:
        """One of ``options``."""
        value = self.get(dotted, default)
        if value not in options:
            raise self.fail(dotted, f"must be one of {', '.join(map(repr, options))}")
        return str(value)

    def bool(self, dotted: str, default: Any = _REQUIRED) -> bool:
        """true or false."""
        value = self.get(dotted, default)
        if not isinstance(value, bool):
            raise self.fail(dotted, "must be true or false")
        return value

    def int(self, dotted: str, default: Any = _REQUIRED, *, lo: int, hi: int) -> int:
        """An integer in [lo, hi]."""
        value = self.get(dotted, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(dotted, f"must be an integer in [{lo}, {hi}]")
        return value

    def float(self, dotted: str, default: Any = _REQUIRED, *, lo: float, hi: float) -> float:
        """A number in [lo, hi]."""
        value = self.get(dotted, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            raise self.fail(dotted, f"must be a number in [{lo}, {hi}]")
        return float(value)

    def str_list(self, dotted: str, default: Any = _REQUIRED) -> list[str]:
        """A list of non-empty strings."""
        value = self.get(dotted, default)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(dotted, "must be a list of non-empty strings")
        return list(value)

    def table_list(self, dotted: str) -> list[Fields]:
        """An array of tables, each as Fields (absent: empty)."""
        value = self.get(dotted, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail(dotted, "must be an array of tables ([[...]])")
        return [Fields(v, self.path, prefix=f"{self.prefix}{dotted}[{i}].")
                for i, v in enumerate(value)]

    def opt_path(self, dotted: str, base: Path) -> Path | None:
        """A path relative to ``base``, or None when absent or empty."""
        value = self.opt_str(dotted)
        return None if value is None else resolve_path(base, value)
