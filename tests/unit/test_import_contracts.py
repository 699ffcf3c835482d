"""The import-linter contracts in pyproject.toml hold, and break on a deliberately wrong import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from drill.procs import console_script

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "devnet", "signer", "watcher", "drill")


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The installed packages' sources and pyproject.toml, copied once per module."""
    copy = tmp_path_factory.mktemp("contracts")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, copy / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run ``lint-imports`` with the project's contracts against the sources in ``tree``."""
    # The copy must shadow the installed packages: it comes first on the path.
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([console_script("lint-imports"), "--no-cache", "--no-logo"],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=90,
                          check=False)


def test_contracts_hold_on_the_tree() -> None:
    """The unmodified tree keeps every contract."""
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    pytest.param("signer/keystore.py", "import flask", "Flask only in signer.http",
                 id="flask-in-keystore"),
    pytest.param("watcher/core.py", "import signer", "drill above signer, watcher and devnet",
                 id="watcher-imports-signer"),
    pytest.param("devnet/chain.py", "import signer.keystore",
                 "drill above signer, watcher and devnet", id="devnet-imports-signer"),
    pytest.param("shared/errors.py", "import watcher", "drill above signer, watcher and devnet",
                 id="shared-imports-a-service"),
    pytest.param("watcher/daemon.py", "import nacl.signing", "nacl only in shared.httpsig",
                 id="nacl-in-watcher"),
    pytest.param("signer/service.py", "from beembase import operations",
                 "beem only in signer.txbuild", id="beem-leaves-txbuild"),
    pytest.param("signer/worker.py", "import twilio", "twilio only in shared.sms",
                 id="twilio-outside-sms"),
    pytest.param("watcher/daemon.py", "import apprise", "apprise only in shared.channels",
                 id="apprise-outside-channels"),
    pytest.param("signer/service.py", "import prometheus_client",
                 "prometheus_client only in shared.metrics", id="prometheus-in-service"),
    pytest.param("watcher/cli.py", "import pythonjsonlogger",
                 "pythonjsonlogger only in shared.logsetup", id="jsonlogger-in-cli"),
    pytest.param("drill/demo.py", "import support.twilio_fixture",
                 "nothing installed imports bench/ or tests/", id="drill-imports-tests"),
])
def test_wrong_import_breaks_its_contract(source_copy: Path, module: str, line: str,
                                          contract: str) -> None:
    """One forbidden import added to a copy of the tree makes lint-imports fail, naming the rule."""
    target = source_copy / module
    original = target.read_text(encoding="utf-8")
    target.write_text(f"{original}\n{line}  # injected by the test\n", encoding="utf-8")
    try:
        result = lint_imports(source_copy)
    finally:
        target.write_text(original, encoding="utf-8")
    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout + result.stderr
    assert "1 broken" in result.stdout


def test_devnet_entry_point_loads_only_the_simulator() -> None:
    """`witness-devnet` without init/demo needs only the devnet extra: no signer, nacl or beem."""
    code = ("import sys, drill.cli; loaded = sorted({m.split('.')[0] for m in sys.modules} & "
            "{'signer', 'watcher', 'nacl', 'beem', 'beembase', 'beemgraphenebase', 'flask', "
            "'twilio'}); assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
