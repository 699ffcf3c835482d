"""Typed, field-naming access to parsed TOML, for every service's config module."""

from __future__ import annotations

import difflib
import os
import re
import stat
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from shared.errors import ConfigError

_REQUIRED: Any = object()
_ENV_LINE = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)")

# Fields names its methods after TOML types (str, int, ...); these aliases keep
# the builtins reachable inside the class body.
Str = str
Int = int
Float = float
Bool = bool


def load_toml(path: Path) -> dict[str, Any]:
    """Parse the TOML file at ``path``.

    Raises:
        ConfigError: unreadable, not UTF-8 or not valid TOML (names the file).
    """
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", path=str(path)) from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"not valid TOML: {e}", path=str(path)) from e


def reject_unknown(raw: Mapping[str, Any], known: Iterable[str], path: Path,
                   prefix: str = "") -> None:
    """Fail closed on a name ``raw`` has that ``known`` lacks: a typo must not pass silently.

    The error names the file, the dotted field and the nearest valid name (a typo such
    as ``aproval`` would otherwise leave ``approval`` at its default without a word).

    Raises:
        ConfigError: the first unknown name, in sorted order.
    """
    names = sorted(known)
    unknown = sorted(set(raw) - set(names))
    if not unknown:
        return
    name = unknown[0]
    what = "field" if prefix else "section"
    close = difflib.get_close_matches(name, names, n=1)
    hint = (f"did you mean {prefix + close[0]!r}?" if close
            else f"valid here: {', '.join(names) or 'nothing'}")
    raise ConfigError(f"unknown {what} {name!r}; {hint}", path=str(path), field=prefix + name)


def resolve_path(base: Path, value: str) -> Path:
    """``value`` as a path, relative to the config file's directory when relative."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


class Fields:
    """Dotted access to a TOML document; every error names the file and field."""

    def __init__(self, raw: dict[Str, Any], path: Path, prefix: Str = "",
                 known: Iterable[Str] | None = None) -> None:
        self.raw = raw
        self.path = path
        self.prefix = prefix
        if known is not None:
            reject_unknown(raw, known, path, prefix)

    def fail(self, dotted: Str, message: Str) -> ConfigError:
        """A ConfigError for field ``dotted``."""
        return ConfigError(message, path=str(self.path), field=self.prefix + dotted)

    def get(self, dotted: Str, default: Any = _REQUIRED) -> Any:
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

    def str(self, dotted: Str, default: Any = _REQUIRED) -> Str:
        """A non-empty string."""
        value = self.get(dotted, default)
        if not isinstance(value, Str) or not value:
            raise self.fail(dotted, "must be a non-empty string")
        return value

    def opt_str(self, dotted: Str) -> Str | None:
        """A string, or None when absent or empty."""
        value = self.get(dotted, None)
        if value is None or value == "":
            return None
        if not isinstance(value, Str):
            raise self.fail(dotted, "must be a string")
        return value

    def choice(self, dotted: Str, options: tuple[Str, ...], default: Any = _REQUIRED) -> Str:
        """One of ``options``."""
        value = self.get(dotted, default)
        if value not in options:
            raise self.fail(dotted, f"must be one of {', '.join(map(repr, options))}")
        return Str(value)

    def bool(self, dotted: Str, default: Any = _REQUIRED) -> Bool:
        """true or false."""
        value = self.get(dotted, default)
        if not isinstance(value, Bool):
            raise self.fail(dotted, "must be true or false")
        return value

    def int(self, dotted: Str, default: Any = _REQUIRED, *, lo: Int, hi: Int) -> Int:
        """An integer in [lo, hi]."""
        value = self.get(dotted, default)
        if isinstance(value, Bool) or not isinstance(value, Int) or not lo <= value <= hi:
            raise self.fail(dotted, f"must be an integer in [{lo}, {hi}]")
        return value

    def float(self, dotted: Str, default: Any = _REQUIRED, *, lo: Float, hi: Float) -> Float:
        """A number in [lo, hi]."""
        value = self.get(dotted, default)
        if isinstance(value, Bool) or not isinstance(value, Int | Float) or not lo <= value <= hi:
            raise self.fail(dotted, f"must be a number in [{lo}, {hi}]")
        return Float(value)

    def str_list(self, dotted: Str, default: Any = _REQUIRED) -> list[Str]:
        """A list of non-empty strings."""
        value = self.get(dotted, default)
        if not isinstance(value, list) or not all(isinstance(v, Str) and v for v in value):
            raise self.fail(dotted, "must be a list of non-empty strings")
        return list(value)

    def section(self, name: Str, known: Iterable[Str], *, required: Bool = False) -> Bool:
        """Check that table ``name`` holds only ``known`` names; return whether it is present.

        Raises:
            ConfigError: required and absent, not a table, or an unknown name in it.
        """
        value = self.get(name, None)
        if value is None:
            if required:
                raise self.fail(name, "section is required")
            return False
        if not isinstance(value, dict):
            raise self.fail(name, "must be a table")
        Fields(value, self.path, f"{self.prefix}{name}.", known=known)
        return True

    def table_list(self, dotted: Str, known: Iterable[Str] | None = None) -> list[Fields]:
        """An array of tables, each as Fields holding only ``known`` names (absent: empty).

        Raises:
            ConfigError: not an array of tables, or a table with an unknown name.
        """
        value = self.get(dotted, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail(dotted, "must be an array of tables ([[...]])")
        return [Fields(v, self.path, prefix=f"{self.prefix}{dotted}[{i}].", known=known)
                for i, v in enumerate(value)]

    def opt_path(self, dotted: Str, base: Path) -> Path | None:
        """A path relative to ``base``, or None when absent or empty."""
        value = self.opt_str(dotted)
        return None if value is None else resolve_path(base, value)


def parse_env_text(text: str, path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments, ``export``, quotes) as a dict; pure.

    Raises:
        ConfigError: a line that is not ``KEY=VALUE``, named by number only (T8: the
            line may hold a token).
    """
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _ENV_LINE.fullmatch(stripped)
        if m is None:
            raise ConfigError(f"line {number} is not KEY=VALUE", path=str(path))
        value = m[2].strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[m[1]] = value
    return values


def read_private_text(path: Path, *, config_path: Path, field: str, max_bytes: int) -> str:
    """The UTF-8 text of a secret-holding file named by a config field: a regular file,
    not a symlink, readable by its owner only (0600 or 0400), at most ``max_bytes``.

    Raises:
        ConfigError: missing, a symlink, unsafe mode, too large or not UTF-8 (naming the
            config file and the field, never the content).
    """
    where = {"path": str(config_path), "field": field}
    try:
        # SECURITY: O_NOFOLLOW — a planted symlink cannot point us at another file.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(f"cannot open {path}: {e.strerror}", **where) from e
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        # SECURITY: T8 — such a file holds a token; group or others must not read it.
        if not stat.S_ISREG(mode) or mode & 0o077:
            raise ConfigError(f"{path} must be a regular file of mode 0600 "
                              f"(it is {stat.S_IMODE(mode):04o}); chmod 600 it", **where)
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ConfigError(f"{path} is larger than {max_bytes} bytes", **where)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8", **where) from e
