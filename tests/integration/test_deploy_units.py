"""deploy/: the systemd units' and the container files' start commands, run for real.

The units' ``ExecStart`` and ``Environment`` are taken from the files as shipped,
their production paths (/opt, /etc, /var/lib, /etc/credstore) moved into a
temporary directory, and run as processes against the devnet the way systemd
would: a clean environment, the working directory ``/``, ``StateDirectory=``
created with its mode and ``LoadCredential=`` copied into ``$CREDENTIALS_DIRECTORY``.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
import tomllib
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from drill.procs import console_script, free_port_base
from drill.services import RunningDevnet, Service, running_devnet

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNITS = ("witness-signer.service", "witness-watcher.service")
CONTAINERFILES = {"signer": "Containerfile.signer", "watcher": "Containerfile.watcher",
                  "devnet": "Containerfile.devnet"}
PROD_BIN = "/opt/witness-failover/bin"
PASSPHRASE_CREDENTIAL = "signer-passphrase"
TWILIO_CREDENTIAL = "twilio-token"
CONTAINER_UID = 10001
# The devnet image carries the drill harness too: `init` writes the signer's keystore.
EXTRAS = {"signer": "signer", "watcher": "watcher", "devnet": "drill"}
SLOT_S = 0.25
HARDENING = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
    "PrivateTmp": "yes", "CapabilityBoundingSet": "",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
}

Unit = dict[str, list[tuple[str, str]]]


# ---- a small systemd unit-file reader ------------------------------------------------------


def parse_unit(path: Path) -> Unit:
    """Sections to (key, value) lists in file order; repeated keys are kept, as systemd does."""
    unit: Unit = {}
    section: list[tuple[str, str]] | None = None
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], [])
            continue
        assert section is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: {line!r} is not key=value"
        section.append((key.strip(), value.strip()))
    return unit


def values(unit: Unit, key: str, section: str = "Service") -> list[str]:
    """Every value of ``key`` in ``section``, in order."""
    return [v for k, v in unit.get(section, []) if k == key]


def single(unit: Unit, key: str, section: str = "Service") -> str:
    """The one value of ``key``; fails when it is missing or repeated."""
    found = values(unit, key, section)
    assert len(found) == 1, f"{key}= appears {len(found)} times"
    return found[0]


def environment(unit: Unit) -> dict[str, str]:
    """The ``Environment=`` assignments of the unit."""
    env: dict[str, str] = {}
    for value in values(unit, "Environment"):
        for word in shlex.split(value):
            name, _, setting = word.partition("=")
            env[name] = setting
    return env


def credentials(unit: Unit) -> dict[str, str]:
    """``LoadCredential=NAME:PATH`` as {NAME: PATH}."""
    return dict(v.split(":", 1) for v in values(unit, "LoadCredential"))


# ---- moving the production layout into a temporary directory ------------------------------


@dataclass
class Root:
    """A temporary stand-in for /: production paths are rewritten under it."""

    path: Path

    def mapping(self) -> dict[str, str]:
        """Production prefix -> local path, longest first."""
        bin_dir = str(Path(console_script("witness-signer")).parent)
        pairs = {PROD_BIN: bin_dir}
        for prefix in ("/etc/witness-signer", "/etc/witness-watcher", "/etc/credstore",
                       "/var/lib/witness-signer", "/var/lib/witness-watcher"):
            pairs[prefix] = str(self.path / prefix.lstrip("/"))
        return dict(sorted(pairs.items(), key=lambda kv: -len(kv[0])))

    def local(self, text: str) -> str:
        """``text`` with every production path moved under the temporary root."""
        for prod, here in self.mapping().items():
            text = text.replace(prod, here)
        return text


def install_signer(drill: Path, root: Root, unit: Unit) -> None:
    """Lay out /etc/witness-signer and /etc/credstore from a drill directory (the runbook)."""
    creds = credentials(unit)
    name, source = PASSPHRASE_CREDENTIAL, creds[PASSPHRASE_CREDENTIAL]
    etc = Path(root.local("/etc/witness-signer"))
    shutil.copytree(drill / "keys", etc / "keys", ignore=shutil.ignore_patterns("*.passphrase"))
    text = (drill / "signer.toml").read_text()
    text = re.sub(r'(?m)^state_dir = .*$', 'state_dir = "/var/lib/witness-signer"', text)
    text = re.sub(r'(?m)^passphrase_file = .*$', f'passphrase_credential = "{name}"', text)
    (etc / "signer.toml").write_text(root.local(text))
    credstore = Path(root.local(source))
    credstore.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(drill / "keys" / "signer.passphrase", credstore)
    credstore.chmod(0o600)
    # The Twilio token credential must exist for systemd to start the unit; the drill's
    # signer.toml has no [notify], so the signer never uses this placeholder.
    token = Path(root.local(creds[TWILIO_CREDENTIAL]))
    token.write_text("drill-placeholder-not-a-token\n")
    token.chmod(0o600)


def install_watcher(drill: Path, root: Root) -> None:
    """Lay out /etc/witness-watcher from a drill directory (the watcher's key and signer.pub)."""
    etc = Path(root.local("/etc/witness-watcher"))
    (etc / "keys").mkdir(parents=True, mode=0o700)
    for name in ("watcher.key", "watcher.pub", "signer.pub"):
        shutil.copy2(drill / "keys" / name, etc / "keys" / name)
    text = (drill / "watcher.toml").read_text()
    text = re.sub(r'(?m)^state_dir = .*$', 'state_dir = "/var/lib/witness-watcher"', text)
    (etc / "watcher.toml").write_text(root.local(text))


def start_unit(unit: Unit, root: Root, log: Path, *, with_credentials: bool = True) -> Service:
    """Start the unit's ExecStart like systemd: clean env, cwd /, state dir, credentials."""
    for state in values(unit, "StateDirectory"):
        mode = int(single(unit, "StateDirectoryMode") or "0755", 8)
        Path(root.local(f"/var/lib/{state}")).mkdir(parents=True, mode=mode, exist_ok=True)
    env = {"PATH": "/usr/bin:/bin", **{k: root.local(v) for k, v in environment(unit).items()}}
    if with_credentials and credentials(unit):
        service_name = single(unit, "ExecStart").split("/")[-1].split()[0]
        creds = root.path / "run" / "credentials" / f"{service_name}.service"
        creds.mkdir(parents=True, mode=0o700)
        for name, source in credentials(unit).items():
            shutil.copy(root.local(source), creds / name)
            (creds / name).chmod(0o400)  # what systemd hands the service
        env["CREDENTIALS_DIRECTORY"] = str(creds)
    argv = shlex.split(root.local(single(unit, "ExecStart")))
    with log.open("ab") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, cwd="/", env=env,
                                start_new_session=True)
    return Service(proc, log)


def wait_healthy(service: Service, url: str, timeout_s: float = 60) -> None:
    """Wait for /healthz to answer 200; fail with the log if the process died."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if service.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"signer did not come up: {service.log.read_text()[-3000:]}")
        time.sleep(0.1)


@pytest.fixture
def units() -> dict[str, Unit]:
    """The two shipped unit files, parsed."""
    return {name: parse_unit(DEPLOY / name) for name in UNITS}


@pytest.fixture
def installed(tmp_path: Path, units: dict[str, Unit]) -> Iterator[tuple[RunningDevnet, Root]]:
    """A running devnet and a temporary root with /etc, /var/lib and /etc/credstore laid out."""
    with running_devnet(tmp_path / "drill", slot_seconds=SLOT_S) as devnet:
        root = Root(tmp_path / "root")
        install_signer(devnet.dir, root, units["witness-signer.service"])
        install_watcher(devnet.dir, root)
        yield devnet, root


# ---- the units ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", UNITS)
def test_unit_is_sandboxed(units: dict[str, Unit], name: str) -> None:
    """Each unit runs as a named user with the sandboxing the deployment promises."""
    unit = units[name]
    for key, expected in HARDENING.items():
        assert single(unit, key) == expected, key
    assert "@system-service" in values(unit, "SystemCallFilter")
    assert single(unit, "User") == name.removesuffix(".service")
    assert single(unit, "ExecStart").startswith(f"{PROD_BIN}/{name.removesuffix('.service')} ")
    state = f"/var/lib/{single(unit, 'StateDirectory')}"
    assert environment(unit)["HOME"] == state  # beem's settings go to the state directory
    assert single(unit, "ReadOnlyPaths") == f"/etc/{name.removesuffix('.service')}"


def test_signer_unit_loads_the_passphrase_as_a_credential(units: dict[str, Unit],
                                                          tmp_path: Path) -> None:
    """The unit's LoadCredential name is the one `witness-signer init` and the runbook use."""
    creds = credentials(units["witness-signer.service"])
    assert set(creds) == {PASSPHRASE_CREDENTIAL, TWILIO_CREDENTIAL}
    name, source = PASSPHRASE_CREDENTIAL, creds[PASSPHRASE_CREDENTIAL]
    assert all(path.startswith("/etc/credstore/") for path in creds.values())
    assert not credentials(units["witness-watcher.service"])
    subprocess.run([console_script("witness-signer"), "init", "--out", str(tmp_path / "etc")],
                   check=True, capture_output=True, timeout=60)
    written = tomllib.loads((tmp_path / "etc" / "signer.toml").read_text())
    assert written["keystore"]["passphrase_credential"] == name
    runbook = (REPO / "docs" / "runbook.md").read_text()
    assert f'passphrase_credential = "{name}"' in runbook
    assert f"LoadCredential={name}:{source}" in runbook


def test_unit_commands_fail_over_on_the_devnet(
        installed: tuple[RunningDevnet, Root], units: dict[str, Unit], tmp_path: Path) -> None:
    """Both units' ExecStart, run as systemd would, switch alice to backup1 when primary stops."""
    devnet, root = installed
    signer_port = devnet.port_base + 1
    with ExitStack() as stack:
        signer = start_unit(units["witness-signer.service"], root, tmp_path / "signer.log")
        stack.callback(signer.stop)
        wait_healthy(signer, f"http://127.0.0.1:{signer_port}")
        watcher = start_unit(units["witness-watcher.service"], root, tmp_path / "watcher.log")
        stack.callback(watcher.stop)
        start = devnet.status()["witness"]["last_confirmed_block_num"]
        devnet.wait_for(lambda s: s["witness"]["last_confirmed_block_num"] > start, 30,
                        "alice to produce with the watcher running")
        time.sleep(2 * SLOT_S)
        assert watcher.proc.poll() is None, watcher.log.read_text()[-3000:]
        devnet.client.call("devnet.stop_node", {"name": "primary"})
        backup1 = next(n["public_key"] for n in devnet.status()["nodes"]
                       if n["name"] == "backup1")
        final = devnet.wait_for(lambda s: s["witness"]["signing_key"] == backup1, 60,
                                "the switch to backup1")
        assert final["double_production"] == 0
        state = Path(root.local("/var/lib/witness-signer"))
        assert (state / "signer.sqlite3").exists()
        assert stat_mode(state) == 0o700
        assert any(Path(root.local("/var/lib/witness-watcher")).iterdir())
        assert signer.proc.poll() is None
        assert watcher.proc.poll() is None


def test_signer_unit_refuses_to_start_without_the_credential(
        installed: tuple[RunningDevnet, Root], units: dict[str, Unit], tmp_path: Path) -> None:
    """Without $CREDENTIALS_DIRECTORY the unit's command cannot unlock the keystore and exits 2."""
    _, root = installed
    signer = start_unit(units["witness-signer.service"], root, tmp_path / "nocred.log",
                        with_credentials=False)
    try:
        assert signer.proc.wait(timeout=60) == 2
    finally:
        signer.stop()
    assert "passphrase" in (tmp_path / "nocred.log").read_text()


def stat_mode(path: Path) -> int:
    """The permission bits of ``path``."""
    return path.stat().st_mode & 0o7777


@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_verify_is_clean(tmp_path: Path, name: str) -> None:
    """`systemd-analyze verify` accepts the unit (its ExecStart pointed at the real script)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    text = (DEPLOY / name).read_text()
    local = tmp_path / name
    local.write_text(text.replace(PROD_BIN, str(Path(console_script("witness-signer")).parent)))
    out = subprocess.run([analyze, "verify", "--man=no", str(local)], capture_output=True,
                         text=True, timeout=60, check=False)
    complaints = [line for line in (out.stdout + out.stderr).splitlines() if name in line]
    assert out.returncode == 0, out.stderr
    assert not complaints, complaints


@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_security_exposure_is_low(tmp_path: Path, name: str) -> None:
    """`systemd-analyze security --offline` rates the unit's exposure 2.0 or lower ("OK")."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    local = tmp_path / name
    local.write_text((DEPLOY / name).read_text())
    out = subprocess.run([analyze, "security", "--offline=yes", str(local)],
                         capture_output=True, text=True, timeout=60, check=False)
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout)
    if found is None:
        pytest.skip(f"this systemd-analyze has no offline security check: {out.stderr[:200]}")
    assert float(found.group(1)) <= 2.0, out.stdout[-3000:]


# ---- the container files and compose.yaml -------------------------------------------------


def load_yaml(path: Path) -> Any:
    """Parse YAML with PyYAML or ruamel.yaml (beem's dependency); skip when neither exists."""
    try:
        import yaml  # noqa: PLC0415 - optional: not a dependency of the project

        return yaml.safe_load(path.read_text())
    except ImportError:
        pass
    try:
        from ruamel.yaml import YAML  # noqa: PLC0415 - optional, comes with beem
    except ImportError:
        pytest.skip("neither PyYAML nor ruamel.yaml is installed to parse compose.yaml")
    return YAML(typ="safe").load(path.read_text())


def compose_commands() -> dict[str, list[str]]:
    """Each compose service's argv: entrypoint + command."""
    doc = load_yaml(DEPLOY / "compose.yaml")
    return {name: [*svc["entrypoint"], *svc["command"]] for name, svc in doc["services"].items()}


def containerfile_command(path: Path) -> list[str]:
    """ENTRYPOINT + CMD of a Containerfile (both in exec form)."""
    text = path.read_text()
    entry = json.loads(re.search(r"(?m)^ENTRYPOINT (\[.*\])$", text).group(1))  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"(?m)^CMD (\[.*\])$", text).group(1))  # type: ignore[union-attr]
    return [*entry, *cmd]


def assert_real_command(argv: list[str]) -> None:
    """``argv`` names one of our console scripts, a real subcommand and only flags it has."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert argv[0] in scripts, argv
    out = subprocess.run([console_script(argv[0]), argv[1], "--help"], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, (argv, out.stderr)
    for flag in (a.split("=", 1)[0] for a in argv[2:] if a.startswith("--")):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", out.stdout), (argv, flag)


def test_compose_commands_are_real_console_scripts_and_flags() -> None:
    """Every compose service runs one of our console scripts with flags its --help lists."""
    commands = compose_commands()
    assert {"drill-init", "devnet", "signer", "watcher"} <= set(commands)
    for argv in commands.values():
        assert_real_command(argv)


@pytest.mark.parametrize("role", sorted(CONTAINERFILES))
def test_containerfile_is_slim_non_root_and_runs_a_real_command(role: str) -> None:
    """Each Containerfile builds on python:3.11-slim, installs its extra, runs non-root."""
    path = DEPLOY / CONTAINERFILES[role]
    text = path.read_text()
    assert re.search(r"(?m)^FROM python:3\.11-slim", text)
    assert f"'/src[{EXTRAS[role]}]'" in text
    users = re.findall(r"(?m)^USER (\S+)$", text)
    assert users
    assert users[-1] not in {"root", "0"}
    assert "HOME=/var/lib/" in text or "HOME=/drill" in text
    assert_real_command(containerfile_command(path))


def test_compose_is_consistent_with_the_drill_it_initialises(tmp_path: Path) -> None:
    """The init command, run locally, writes every file the other services' commands name."""
    doc = load_yaml(DEPLOY / "compose.yaml")
    commands = compose_commands()
    init = commands["drill-init"]
    port_base = int(init[init.index("--port-base") + 1])
    local_port = free_port_base()
    argv = [console_script(init[0]), *[a.replace("/drill", str(tmp_path / "drill"))
                                       for a in init[1:]], "--fast-kdf"]
    argv[argv.index("--port-base") + 1] = str(local_port)
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    for name in ("devnet", "signer", "watcher"):
        config = commands[name][commands[name].index("--config") + 1]
        assert config.startswith("/drill/")
        assert (tmp_path / "drill" / config.removeprefix("/drill/")).is_file(), config
        service = doc["services"][name]
        assert "drill:/drill" in service["volumes"]
        assert service["read_only"] is True
        assert "ALL" in service["cap_drop"]
        if name != "devnet":
            assert service["network_mode"] == "service:devnet"
    signer_toml = tomllib.loads((tmp_path / "drill" / "signer.toml").read_text())
    assert signer_toml["signer"]["port"] == local_port + 1
    health = " ".join(doc["services"]["signer"]["healthcheck"]["test"])
    assert f"127.0.0.1:{port_base + 1}/healthz" in health


def test_unit_files_use_no_interpreter_outside_the_install() -> None:
    """ExecStart runs the console script directly, never a shell or a system python."""
    for name in UNITS:
        argv = shlex.split(single(parse_unit(DEPLOY / name), "ExecStart"))
        assert Path(argv[0]).name == name.removesuffix(".service")
        assert not {"sh", "bash", "python", "python3"} & {Path(a).name for a in argv}


# ---- every unit and container file against what `init` writes -------------------------------


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """signer.toml and watcher.toml exactly as `witness-signer init` and `witness-watcher init`."""
    out = tmp_path_factory.mktemp("init")
    for tool in ("witness-signer", "witness-watcher"):
        subprocess.run([console_script(tool), "init", "--out", str(out / tool)], check=True,
                       capture_output=True, timeout=60)
    return {"signer": (out / "witness-signer" / "signer.toml").read_text(),
            "watcher": (out / "witness-watcher" / "watcher.toml").read_text()}


def cli_default_config(tool: str) -> str:
    """The default --config a console script's help names (wrapped help joined back)."""
    out = subprocess.run([console_script(tool), "status", "--help"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    found = re.search(r"\(default (/\S+?\.toml)", "".join(out.split()).replace("(default",
                                                                                " (default "))
    assert found, out
    return found.group(1)


@pytest.mark.parametrize("name", UNITS)
def test_unit_config_path_is_the_cli_default(units: dict[str, Unit], name: str) -> None:
    """The unit's --config is the file the CLI reads without --config, inside ReadOnlyPaths."""
    tool = name.removesuffix(".service")
    argv = shlex.split(single(units[name], "ExecStart"))
    config = argv[argv.index("--config") + 1]
    assert config == cli_default_config(tool)
    assert Path(config).parent == Path(single(units[name], "ReadOnlyPaths"))


def test_signer_credentials_are_the_ones_init_names(units: dict[str, Unit],
                                                   written: dict[str, str]) -> None:
    """Each LoadCredential= of the signer unit is the one signer.toml's comments tell to use."""
    creds = credentials(units["witness-signer.service"])
    text = written["signer"]
    init = tomllib.loads(text)
    assert init["keystore"]["passphrase_credential"] == PASSPHRASE_CREDENTIAL
    for name, source in creds.items():
        assert f"LoadCredential={name}:{source}" in text, name
    token = f"/run/credentials/witness-signer.service/{TWILIO_CREDENTIAL}"
    assert f'twilio_auth_token_file = "{token}"' in text
    assert f"LoadCredential={TWILIO_CREDENTIAL}:{creds[TWILIO_CREDENTIAL]}" in (
        DEPLOY / "README.md").read_text()


@pytest.mark.parametrize("name", UNITS)
def test_unit_state_directory_is_the_one_init_suggests(units: dict[str, Unit], name: str,
                                                       written: dict[str, str]) -> None:
    """StateDirectory= is the systemd state_dir the init files and the unit header name."""
    state = f"/var/lib/{single(units[name], 'StateDirectory')}"
    header = (DEPLOY / name).read_text()
    assert f'state_dir = "{state}"' in header
    if name == "witness-signer.service":
        assert f"systemd: {state}" in written["signer"]


def test_container_ports_are_the_port_init_writes(written: dict[str, str]) -> None:
    """The signer image exposes and publishes the port `witness-signer init` writes; the
    watcher image's example URL calls it."""
    port = tomllib.loads(written["signer"])["signer"]["port"]
    signer = (DEPLOY / CONTAINERFILES["signer"]).read_text()
    assert re.findall(r"(?m)^EXPOSE (\d+)$", signer) == [str(port)]
    assert f"-p 127.0.0.1:{port}:{port}" in signer
    watcher = (DEPLOY / CONTAINERFILES["watcher"]).read_text()
    urls = re.findall(r"https?://[\w.-]+:(\d+)", watcher)
    assert urls
    assert set(urls) == {str(port)}
    for path in (DEPLOY / "witness-watcher.service", DEPLOY / "README.md"):
        assert not re.search(rf"https?://[\w.-]+:(?!{port})\d+", path.read_text()), path


@pytest.mark.parametrize("role", sorted(CONTAINERFILES))
def test_container_uid_is_documented_for_host_mounted_keys(role: str) -> None:
    """Each image runs as uid 10001, and the docs say host-mounted keys must belong to it."""
    text = (DEPLOY / CONTAINERFILES[role]).read_text()
    assert f"--uid {CONTAINER_UID}" in text
    assert f"--gid {CONTAINER_UID}" in text
    readme = (DEPLOY / "README.md").read_text()
    assert f"uid {CONTAINER_UID}" in readme
    assert f"chown {CONTAINER_UID}:{CONTAINER_UID}" in readme
    if role in {"signer", "watcher"}:
        assert f"must belong to uid {CONTAINER_UID}" in text


@pytest.mark.parametrize("role", ["signer", "watcher"])
def test_container_config_and_state_match_the_units(units: dict[str, Unit], role: str) -> None:
    """Each service image reads the unit's config path and keeps state where the unit does."""
    unit = units[f"witness-{role}.service"]
    argv = containerfile_command(DEPLOY / CONTAINERFILES[role])
    unit_argv = shlex.split(single(unit, "ExecStart"))
    assert argv[argv.index("--config") + 1] == unit_argv[unit_argv.index("--config") + 1]
    state = f"/var/lib/{single(unit, 'StateDirectory')}"
    text = (DEPLOY / CONTAINERFILES[role]).read_text()
    assert f'VOLUME ["{state}"]' in text
    assert f"HOME={state}" in text


def test_watcher_ca_file_is_offered_where_operators_look(written: dict[str, str]) -> None:
    """`[signer] ca_file` appears in init's watcher.toml, the unit header and the image notes."""
    assert '# ca_file = "' in written["watcher"]
    for path in (DEPLOY / "witness-watcher.service", DEPLOY / CONTAINERFILES["watcher"]):
        assert "ca_file = " in path.read_text(), path
