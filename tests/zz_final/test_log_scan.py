"""Runs last: no log written during the suite holds a private key, passphrase or API token.

pytest orders test directories by name, so ``zz_final`` follows every signer,
watcher and devnet scenario of a one-process run. ``make test`` runs the suite on
two workers first and this scan afterwards, pointing it at that run's temporary
directory with ``WITNESS_LOG_SCAN_DIR``. It reads every ``*.log`` file under the
scanned directory (the devnet, signer and watcher processes write
their logs into their drill directories there; in-process logs go to
``inprocess.log``) and every secret those scenarios used: the WIFs in each
drill's ``devnet.toml``, each keystore passphrase, and the local Twilio token.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from support.twilio_fixture import FAKE_AUTH_TOKEN

from devnet.keys import b58decode


def secrets_used(base: Path) -> dict[str, str]:
    """Every secret a scenario under ``base`` used, by a label for the failure message."""
    found: dict[str, str] = {FAKE_AUTH_TOKEN: "twilio auth token"}
    for config in base.rglob("devnet.toml"):
        try:
            doc = tomllib.loads(config.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            continue
        wifs = [doc.get("accounts", {}).get("active_wif")]
        wifs += [n.get("signing_wif") for n in doc.get("nodes", [])]
        for wif in filter(None, wifs):
            found[wif] = f"WIF from {config}"
            found[b58decode(wif)[1:33].hex()] = f"raw key from {config}"
    for passphrase in base.rglob("signer.passphrase"):
        text = passphrase.read_text().strip()
        if text:
            found[text] = f"passphrase {passphrase}"
    return found


def test_no_secret_in_any_log(tmp_path_factory: pytest.TempPathFactory) -> None:
    """No log line of the whole run contains a WIF, raw key, passphrase or Twilio token."""
    base = Path(os.environ.get("WITNESS_LOG_SCAN_DIR") or tmp_path_factory.getbasetemp())
    logs = [p for pattern in ("*.log", "*.out", "*.err") for p in base.rglob(pattern)
            if p.is_file()]
    drills = list(base.rglob("devnet.toml"))
    if not drills:
        pytest.skip("no signer or devnet scenario ran in this session; nothing to scan")
    secrets = secrets_used(base)
    assert len(secrets) > 1
    leaks = []
    for log in logs:
        text = log.read_text(errors="replace")
        leaks += [f"{label} in {log}" for secret, label in secrets.items() if secret in text]
    assert not leaks, leaks
    assert logs
