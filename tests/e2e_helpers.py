"""Helpers for end-to-end tests: run the CLI in-process against lab hosts, and inspect hosts with pypsrp."""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan
from typer.testing import CliRunner

from ipsec_deploy.cli import app

EXAMPLE_LAB = Path(__file__).resolve().parent.parent / "inventory" / "lab.yaml"
PASSWORD_VARIABLE = "IPSEC_DEPLOY_TEST_PASSWORD"


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def free_listen_ports(count: int) -> list[int]:
    """Return ports on 127.0.0.1 that nothing listens on, for tests that start a lab at fixed ports.

    They come from below Linux's ephemeral range (32768 and up): a port the
    kernel handed out to an outgoing connection of an earlier test could still
    be held when the lab tries to listen on it.
    """
    ports: list[int] = []
    start = random.randrange(20000, 31000)
    for port in range(start, 32768):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError(f"no {count} free ports on 127.0.0.1 between {start} and 32767")


def run_cli(*arguments: str) -> CliResult:
    result = CliRunner().invoke(app, list(arguments), env={"COLUMNS": "200", "NO_COLOR": "1"})
    return CliResult(result.exit_code, result.stdout, result.stderr)


def with_password_env(inventory: Path) -> Path:
    """Make the inventory read the lab password from PASSWORD_VARIABLE, as a real one would."""
    document = yaml.safe_load(inventory.read_text(encoding="utf-8"))
    document.setdefault("connection", {})["password_env"] = PASSWORD_VARIABLE
    for host in document["hosts"].values():
        if "connection" in host:
            host["connection"]["password_env"] = PASSWORD_VARIABLE
    inventory.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return inventory


def host_connection(inventory: Path, host: str) -> tuple[str, int, str]:
    document = yaml.safe_load(inventory.read_text(encoding="utf-8"))
    entry = document["hosts"][host]
    username = (entry.get("connection") or {}).get("username") or document["connection"]["username"]
    return entry["address"], entry["connection"]["port"], username


def query_host(inventory: Path, host: str, password: str, cmdlet: str, parameters: dict[str, Any]) -> list[Any]:
    """Run one cmdlet on a lab host with pypsrp directly, not through the executor."""
    address, port, username = host_connection(inventory, host)
    wsman = WSMan(address, port=port, ssl=False, username=username, password=password, auth="negotiate", no_proxy=True)
    with RunspacePool(wsman) as pool:
        shell = PowerShell(pool)
        shell.add_cmdlet(cmdlet)
        for name, value in parameters.items():
            shell.add_parameter(name, value)
        output = shell.invoke()
        assert not shell.had_errors, [str(e) for e in shell.streams.error]
        return output


def managed_names(inventory: Path, host: str, password: str, group: str = "ipsec-deploy") -> set[tuple[str, str]]:
    """Return (kind, name) of every object of the managed group on a host, read with pypsrp."""
    kinds = {
        "phase1_auth_set": "Get-NetIPsecPhase1AuthSet",
        "phase2_auth_set": "Get-NetIPsecPhase2AuthSet",
        "main_mode_crypto_set": "Get-NetIPsecMainModeCryptoSet",
        "quick_mode_crypto_set": "Get-NetIPsecQuickModeCryptoSet",
        "main_mode_rule": "Get-NetIPsecMainModeRule",
        "ipsec_rule": "Get-NetIPsecRule",
    }
    found = set()
    for kind, cmdlet in kinds.items():
        for item in query_host(inventory, host, password, cmdlet, {"PolicyStore": "PersistentStore"}):
            properties = item.adapted_properties
            if properties.get("Group") == group:
                found.add((kind, properties["Name"]))
    return found
