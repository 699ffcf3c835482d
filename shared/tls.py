"""Trusting a signer's own certificate authority (``ca_file``): one place for every client.

A signer on a private network usually has a self-signed certificate or one from a
private CA. Its clients (the watcher, the remote operator CLI) name that CA's PEM
file; it replaces, never widens, the system's trust store for the signer's URL.
TLS verification is never switched off.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import urlsplit

from shared.errors import ConfigError


def check_ca_file(ca_file: Path, url: str, *, path: str | None = None,
                  field: str = "signer.ca_file") -> Path:
    """``ca_file`` if it is a readable PEM bundle usable for ``url`` (an https URL).

    Raises:
        ConfigError: the URL is not https, or the file is missing, unreadable or not PEM
            certificates (named with the config ``path`` and ``field``).
    """
    if urlsplit(url).scheme != "https":
        raise ConfigError(f"is set, but the signer URL {url!r} is not https", path=path,
                          field=field)
    try:
        ssl.create_default_context(cafile=str(ca_file))
    except FileNotFoundError as e:
        raise ConfigError(f"{ca_file}: no such file", path=path, field=field) from e
    except OSError as e:  # ssl.SSLError included: not PEM certificates
        raise ConfigError(f"{ca_file}: not a readable PEM certificate bundle "
                          f"({type(e).__name__})", path=path, field=field) from e
    return ca_file


def requests_verify(ca_file: Path | None) -> str | bool:
    """The ``verify`` argument for ``requests``: the CA file, or the system's trust store.

    Pass it with each request (``session.request(..., verify=...)``): a session-wide
    ``session.verify`` is overridden by ``REQUESTS_CA_BUNDLE`` from the environment.
    """
    return str(ca_file) if ca_file is not None else True
