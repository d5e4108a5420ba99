"""Staged rollout: whatever fails and wherever, no pair ends with Require on one host and no mirror on the peer.

The property test injects a fault at each point of the rollout in turn: each
host, each write cmdlet call of each stage, a dropped connection after each
request, and Ctrl-C between host steps. After each apply it checks the
invariant on the lab hosts' resulting rules.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
import yaml

from ipsec_deploy.executor.run import Executor
from ipsec_deploy.lab.netsecurity import CmdletFault
from tests.e2e_helpers import PASSWORD_VARIABLE, run_cli, with_password_env

PASSWORD = "Lab-Passw0rd"

INVENTORY = """\
connection:
  transport: http
  auth: negotiate
  username: CORP\\\\ipsec-admin
forests:
  corp.example:
    domain_controllers: [10.0.0.10]
hosts:
  APP-SRV01:
    address: 127.0.0.1
    connection: {port: 45101}
    ip: [10.0.1.10]
    domain: corp.example
  DB-SRV01:
    address: 127.0.0.1
    connection: {port: 45102}
    ip: [10.0.1.20]
    domain: corp.example
  REPORT-SRV01:
    address: 127.0.0.1
    connection: {port: 45103}
    ip: [10.0.1.30]
    domain: corp.example
networks:
  server-vlan: [10.0.1.0/24]
  domain-controllers: [10.0.0.10]
auth:
  kerberos:
    phase1: [kerberos]
crypto:
  strong:
    main_mode: [{encryption: AES256, hash: SHA256, key_exchange: DH14}]
    quick_mode: [{encryption: AES256, integrity: SHA256}]
    pfs_group: DH14
exemptions:
  - name: domain-controllers
    endpoint1: [server-vlan]
    endpoint2: [domain-controllers]
policies:
  - name: server-vlan
    endpoint1: [server-vlan]
    endpoint2: [server-vlan]
    auth: kerberos
    crypto: strong
  - name: app-db
    endpoint1: [APP-SRV01]
    endpoint2: [DB-SRV01]
    protocol: TCP
    endpoint2_ports: [1433]
    auth: kerberos
    crypto: strong
lab:
  password: Lab-Passw0rd
"""

HOSTS = ("APP-SRV01", "DB-SRV01", "REPORT-SRV01")


def with_lab_hosts(extra_by_host: dict[str, str]) -> str:
    text = INVENTORY
    if extra_by_host:
        text += "  hosts:\n"
        for host, extra in extra_by_host.items():
            text += f"    {host}:\n{extra}"
    return text


def fail_cmdlet(cmdlet: str, call_number: int) -> str:
    return (
        "      faults:\n"
        "        fail_cmdlets:\n"
        f"          - cmdlet: {cmdlet}\n"
        "            message: Injected failure.\n"
        f"            call_number: {call_number}\n"
    )


def rules_of(running, host: str) -> list[dict]:
    with running.network.transaction():
        found = running.network.host(host).invoke_checked("Get-NetIPsecRule", {"PolicyStore": "PersistentStore"})
    return [item.properties for item in found]


def _covers(entries, address) -> bool:
    values = entries if isinstance(entries, list) else [entries]
    for value in values:
        text = str(value)
        if text.lower() == "any":
            return True
        try:
            if address in ipaddress.ip_network(text.replace("/255.255.255.0", "/24"), strict=False):
                return True
        except ValueError:
            continue
    return False


def invariant_violations(running, addresses: dict[str, ipaddress.IPv4Address]) -> list[str]:
    """Return every (host, rule, peer) where the host requires IPsec and the peer has no matching rule."""
    rules = {host: [r for r in rules_of(running, host) if str(r.get("Enabled")) == "True"] for host in HOSTS}
    violations = []
    for host in HOSTS:
        for rule in rules[host]:
            if "Require" not in (rule.get("InboundSecurity"), rule.get("OutboundSecurity")):
                continue
            for peer in HOSTS:
                if peer == host or not _covers(rule.get("RemoteAddress"), addresses[peer]) or not _covers(rule.get("LocalAddress"), addresses[host]):
                    continue
                mirrored = any(
                    _covers(other.get("LocalAddress"), addresses[peer])
                    and _covers(other.get("RemoteAddress"), addresses[host])
                    and (other.get("InboundSecurity"), other.get("OutboundSecurity")) != ("None", "None")
                    for other in rules[peer]
                )
                if not mirrored:
                    violations.append(f"{host}:{rule.get('Name')} requires IPsec but {peer} has no matching rule")
    return violations


ADDRESSES = {"APP-SRV01": ipaddress.ip_address("10.0.1.10"), "DB-SRV01": ipaddress.ip_address("10.0.1.20"), "REPORT-SRV01": ipaddress.ip_address("10.0.1.30")}


@pytest.fixture
def start(lab_factory, monkeypatch, tmp_path):
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)

    def start_with(text: str):
        running, inventory = lab_factory(text)
        return running, with_password_env(inventory), tmp_path / "journal"

    return start_with


def apply(inventory: Path, journal: Path, *extra: str):
    return run_cli("apply", str(inventory), "--yes", "--journal-dir", str(journal), "--verify-timeout", "0", "--attempts", "1", *extra)


def security_of(running, host: str, rule: str) -> tuple[str, str]:
    for properties in rules_of(running, host):
        if properties.get("Name") == rule:
            return properties["InboundSecurity"], properties["OutboundSecurity"]
    raise AssertionError(f"{host} has no rule {rule}")


def test_normal_apply_reaches_planned_security(start):
    running, inventory, journal = start(INVENTORY)
    result = apply(inventory, journal)
    assert result.exit_code == 0, result.stdout + result.stderr
    for host in HOSTS:
        assert security_of(running, host, "ipsec-deploy-rule-server-vlan") == ("Require", "Require")
    assert security_of(running, "DB-SRV01", "ipsec-deploy-rule-app-db-endpoint2") == ("Require", "Require")
    assert "stayed in Request" not in result.stdout
    assert invariant_violations(running, ADDRESSES) == []


def test_failing_request_stage_keeps_peers_in_request(start):
    running, inventory, journal = start(with_lab_hosts({"DB-SRV01": fail_cmdlet("New-NetIPsecRule", 1)}))
    result = apply(inventory, journal)
    assert result.exit_code == 1
    assert "request stage: New-NetIPsecRule" in result.stdout
    assert "stayed in Request" in result.stdout
    assert "APP-SRV01: ipsec-deploy-rule-server-vlan (DB-SRV01 did not complete the request stage, so its mirror rule may be missing)" in result.stdout
    assert security_of(running, "APP-SRV01", "ipsec-deploy-rule-server-vlan") == ("Request", "Request")
    assert invariant_violations(running, ADDRESSES) == []

    # The journal keeps the list, so 'runs' shows it after the apply's output is gone.
    rule_in_request = "APP-SRV01: ipsec-deploy-rule-server-vlan (DB-SRV01 did not complete the request stage, so its mirror rule may be missing)"
    listing = json.loads(run_cli("runs", "--journal-dir", str(journal), "--format", "json").stdout)
    table = run_cli("runs", "--journal-dir", str(journal))
    assert rule_in_request in listing[0]["held_in_request"]
    assert f"left in Request: {rule_in_request}" in " ".join(table.stdout.split())


def test_failing_raise_stage_reported(start):
    running, inventory, journal = start(with_lab_hosts({"REPORT-SRV01": fail_cmdlet("Set-NetIPsecRule", 1)}))
    result = apply(inventory, journal)
    assert result.exit_code == 1
    assert "raise stage: Set-NetIPsecRule" in result.stdout
    assert security_of(running, "REPORT-SRV01", "ipsec-deploy-rule-server-vlan") == ("Request", "Request")
    assert invariant_violations(running, ADDRESSES) == []


def test_strict_restores_failing_hosts(start):
    text = with_lab_hosts({"DB-SRV01": "      forest: other.example\n"})
    running, inventory, journal = start(text)
    result = apply(inventory, journal, "--strict")
    assert result.exit_code == 1
    assert "DB-SRV01: restored to its state before the run (--strict)" in result.stdout
    assert [r for r in rules_of(running, "DB-SRV01") if str(r.get("Group")) == "ipsec-deploy"] == []
    assert invariant_violations(running, ADDRESSES) == []
    # The result table counts the writes of every stage and of the restore,
    # which the lab counted as they arrived (no write failed, so none was undone).
    assert writes_in_table(result.stdout)["DB-SRV01"] == running.hosts["DB-SRV01"].write_count > 0


def writes_in_table(stdout: str) -> dict[str, int]:
    """Return the Writes column of the result table by host."""
    writes = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] in ("changed", "failed", "unchanged", "unreachable") and parts[2].isdigit():
            writes[parts[0]] = int(parts[2])
    return writes


def test_batches_stop_after_too_many_failures(start):
    running, inventory, journal = start(with_lab_hosts({"APP-SRV01": "      faults:\n        reject_credentials: false\n" + fail_cmdlet("New-NetIPsecRule", 1)[len("      faults:\n"):]}))
    result = apply(inventory, journal, "--batch-size", "1", "--max-fail-percent", "0")
    assert result.exit_code == 1
    assert "not changed: too many hosts failed in earlier batches" in result.stdout
    assert invariant_violations(running, ADDRESSES) == []


def fault_points() -> list[tuple[str, str]]:
    """Every host x every write cmdlet call of the request and raise stages, and dropped connections."""
    points = []
    for host in HOSTS:
        for call in range(1, 4):
            points.append((host, fail_cmdlet("New-NetIPsecRule", call)))
        for call in range(1, 3):
            points.append((host, fail_cmdlet("New-NetIPsecMainModeRule", call)))
        points.append((host, fail_cmdlet("New-NetIPsecPhase1AuthSet", 1)))
        points.append((host, fail_cmdlet("New-NetIPsecMainModeCryptoSet", 1)))
        points.append((host, fail_cmdlet("New-NetIPsecQuickModeCryptoSet", 1)))
        for call in range(1, 4):
            points.append((host, fail_cmdlet("Set-NetIPsecRule", call)))
        for requests in (6, 9, 12, 15, 18):
            points.append((host, f"      faults:\n        drop_after_requests: {requests}\n"))
    return points


@pytest.mark.parametrize("host,fault", fault_points(), ids=lambda value: value.strip().split("\n")[-1].strip() if "\n" in str(value) else str(value))
def test_invariant_under_injected_fault(start, host, fault):
    running, inventory, journal = start(with_lab_hosts({host: fault}))
    result = apply(inventory, journal)
    assert "Traceback" not in result.stdout + result.stderr
    assert invariant_violations(running, ADDRESSES) == []


@pytest.mark.parametrize("interrupt_at", range(1, 8))
def test_invariant_under_ctrl_c(start, monkeypatch, interrupt_at):
    running, inventory, journal = start(INVENTORY)
    calls = {"count": 0}
    original = Executor.apply_operations

    def interrupting(self, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] == interrupt_at:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Executor, "apply_operations", interrupting)
    result = apply(inventory, journal)
    if calls["count"] >= interrupt_at:
        assert result.exit_code == 130
        assert "Interrupted." in result.stderr
    assert invariant_violations(running, ADDRESSES) == []


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("cmdlet", ["Set-NetIPsecRule", "Remove-NetIPsecRule"])
def test_invariant_when_changing_deployment(start, host, cmdlet):
    running, inventory, journal = start(INVENTORY)
    assert apply(inventory, journal).exit_code == 0
    assert invariant_violations(running, ADDRESSES) == []

    # Narrow the VLAN policy to two hosts and move the SQL port, with one
    # host failing its first call of the cmdlet.
    with running.network.transaction():
        lab_host = running.network.host(host)
        next_call = lab_host.state.call_counts.get(cmdlet.lower(), 0) + 1
        lab_host.faults.append(CmdletFault(cmdlet, "Injected failure.", call_number=next_call))
    document = yaml.safe_load(inventory.read_text())
    for policy in document["policies"]:
        if policy["name"] == "server-vlan":
            policy["endpoint1"] = policy["endpoint2"] = ["APP-SRV01", "DB-SRV01"]
        if policy["name"] == "app-db":
            policy["endpoint2_ports"] = [1434]
    text = yaml.safe_dump(document, sort_keys=False)
    inventory.write_text(text)

    result = apply(inventory, journal)
    assert "Traceback" not in result.stdout + result.stderr
    assert invariant_violations(running, ADDRESSES) == []


def narrowed(inventory: Path) -> str:
    document = yaml.safe_load(inventory.read_text())
    for policy in document["policies"]:
        if policy["name"] == "server-vlan":
            policy["endpoint1"] = policy["endpoint2"] = ["APP-SRV01", "DB-SRV01"]
    return yaml.safe_dump(document, sort_keys=False)


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("cmdlet", ["New-NetIPsecRule", "Set-NetIPsecRule"])
def test_invariant_when_reverting(start, host, cmdlet):
    running, inventory, journal = start(INVENTORY)
    assert apply(inventory, journal).exit_code == 0
    wide = inventory.read_text()
    inventory.write_text(narrowed(inventory))
    assert apply(inventory, journal).exit_code == 0
    inventory.write_text(wide)

    with running.network.transaction():
        lab_host = running.network.host(host)
        next_call = lab_host.state.call_counts.get(cmdlet.lower(), 0) + 1
        lab_host.faults.append(CmdletFault(cmdlet, "Injected failure.", call_number=next_call))

    runs = json.loads(run_cli("runs", "--journal-dir", str(journal), "--format", "json").stdout)
    result = run_cli("revert", str(inventory), "--yes", "--journal-dir", str(journal), "--run", runs[-1]["run_id"], "--verify-timeout", "0", "--attempts", "1")
    assert "Traceback" not in result.stdout + result.stderr
    assert invariant_violations(running, ADDRESSES) == []


def test_revert_restores_wider_policy_in_stages(start):
    running, inventory, journal = start(INVENTORY)
    assert apply(inventory, journal).exit_code == 0
    wide = inventory.read_text()
    inventory.write_text(narrowed(inventory))
    assert apply(inventory, journal).exit_code == 0
    assert "ipsec-deploy-rule-server-vlan" not in {r["Name"] for r in rules_of(running, "REPORT-SRV01")}
    inventory.write_text(wide)

    runs = json.loads(run_cli("runs", "--journal-dir", str(journal), "--format", "json").stdout)
    result = run_cli("revert", str(inventory), "--yes", "--journal-dir", str(journal), "--run", runs[-1]["run_id"], "--verify-timeout", "0")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert security_of(running, "REPORT-SRV01", "ipsec-deploy-rule-server-vlan") == ("Require", "Require")
    assert invariant_violations(running, ADDRESSES) == []
    lines = [json.loads(line) for line in (journal / "runs" / json.loads(run_cli("runs", "--journal-dir", str(journal), "--format", "json").stdout)[-1]["run_id"] / "operations.jsonl").read_text().splitlines()]
    assert {line["stage"] for line in lines} >= {"request", "raise"}


def test_invariant_with_limit(start):
    running, inventory, journal = start(INVENTORY)
    assert apply(inventory, journal).exit_code == 0
    inventory.write_text(narrowed(inventory))

    # Only APP-SRV01 is in this run; REPORT-SRV01 keeps its Require rule
    # towards APP-SRV01, so APP-SRV01 must keep its mirror of it.
    result = apply(inventory, journal, "--limit", "APP-SRV01")
    assert "Traceback" not in result.stdout + result.stderr
    assert "REPORT-SRV01 may still require IPsec with its old rules" in result.stdout
    assert "were not changed, at their old security" in result.stdout
    assert "stayed in Request" not in result.stdout
    assert result.exit_code == 1
    assert invariant_violations(running, ADDRESSES) == []
    # The rule kept for REPORT-SRV01 is left exactly as it was, not lowered to Request.
    assert security_of(running, "APP-SRV01", "ipsec-deploy-rule-server-vlan") == ("Require", "Require")
