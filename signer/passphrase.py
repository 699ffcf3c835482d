"""Where the keystore passphrase comes from, and reading secrets without echo.

No key material here: this module hands a :class:`Secret` to
:mod:`signer.keystore`, which alone decrypts chain keys.
"""

from __future__ import annotations

import getpass
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from shared.errors import KeystoreError
from shared.secret import Secret
from signer.privatefile import read_private_file

__all__ = ["PassphraseSource", "read_passphrase", "read_wif_noecho"]

log = logging.getLogger(__name__)

_CREDENTIAL_NAME = re.compile(r"[A-Za-z0-9_.@-]+")


@dataclass(frozen=True)
class PassphraseSource:
    """One place the keystore passphrase may come from; build with the class methods."""

    kind: Literal["tty", "file", "env"]
    path: Path | None = None
    env_name: str | None = None
    env_value: Secret | None = field(default=None, repr=False)
    prompt: str = "Keystore passphrase: "

    @classmethod
    def tty(cls, prompt: str = "Keystore passphrase: ") -> PassphraseSource:
        """Prompt on the terminal without echo; skipped when stdin is not a TTY."""
        return cls("tty", prompt=prompt)

    @classmethod
    def file(cls, path: str | Path) -> PassphraseSource:
        """Read a 0600 file; one trailing newline is stripped; skipped if missing."""
        return cls("file", path=Path(path))

    @classmethod
    def credential(cls, name: str, credentials_directory: str | None) -> PassphraseSource:
        """A systemd ``LoadCredential`` file; pass the value of ``$CREDENTIALS_DIRECTORY``.

        Raises:
            KeystoreError: ``name`` is not a plain file name.
        """
        if not _CREDENTIAL_NAME.fullmatch(name) or name in {".", ".."}:
            raise KeystoreError(f"credential name {name!r} must be a plain file name")
        path = Path(credentials_directory, name) if credentials_directory else None
        return cls("file", path=path)

    @classmethod
    def env(cls, name: str, value: str | None) -> PassphraseSource:
        """An environment variable's value, read by the config module; logs a warning when used."""
        return cls("env", env_name=name, env_value=None if value is None else Secret(value))


def read_passphrase(sources: PassphraseSource | Sequence[PassphraseSource]) -> Secret:
    """Return the passphrase from the first available source, in the order given.

    A TTY source is skipped when stdin is not a terminal, a file source when the
    file does not exist, an env source when the variable is unset.

    Raises:
        KeystoreError: no source available, an unsafe file mode, or an empty passphrase.
    """
    for source in [sources] if isinstance(sources, PassphraseSource) else sources:
        text: str | None = None
        if source.kind == "tty" and sys.stdin is not None and sys.stdin.isatty():
            try:
                text = getpass.getpass(source.prompt)
            except EOFError as e:
                raise KeystoreError("no passphrase entered") from e
        elif source.kind == "file" and source.path is not None:
            data = read_private_file(source.path, "passphrase file", 64 << 10)
            if data is not None:
                try:
                    text = data.decode()
                except UnicodeDecodeError:
                    raise KeystoreError(f"{source.path}: passphrase is not UTF-8") from None
                text = text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text
        elif source.kind == "env" and source.env_value is not None:
            log.warning(
                "keystore passphrase taken from environment variable %s: environment "
                "variables leak via /proc/<pid>/environ, child processes and crash dumps; "
                "prefer a credential file (systemd LoadCredential)",
                source.env_name,
            )
            text = source.env_value.reveal()
        if text is not None:
            if not text:
                raise KeystoreError(f"empty passphrase from {_describe(source)}")
            return Secret(text)
        log.debug("passphrase source %s not available", _describe(source))
    raise KeystoreError("no passphrase source available (no TTY, no credential file, no env)")


def read_wif_noecho(prompt: str = "WIF private key: ") -> Secret:
    """Read a WIF from the terminal without echo (for ``keystore import``).

    Raises:
        KeystoreError: nothing was entered.
    """
    try:
        text = getpass.getpass(prompt).strip()
    except EOFError as e:
        raise KeystoreError("no key entered") from e
    if not text:
        raise KeystoreError("no key entered")
    return Secret(text)


def _describe(source: PassphraseSource) -> str:
    if source.kind == "file":
        return f"file {source.path}" if source.path else "credential (no $CREDENTIALS_DIRECTORY)"
    return f"environment variable {source.env_name}" if source.kind == "env" else "terminal"
