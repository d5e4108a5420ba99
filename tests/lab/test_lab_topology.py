"""The inventory's lab section, start_lab, and lab hosts reached with pypsrp as a deployer would."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from rich.console import Console
import yaml
from pypsrp.complex_objects import PSInvocationState
from pypsrp.exceptions import AuthenticationError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from ipsec_deploy.cmdlets import CmdletCall
from ipsec_deploy.inventory import InventoryError, load_inventory
from ipsec_deploy.lab.netsecurity.spec import load_spec
from ipsec_deploy.lab.runner import RunningLab, serve_lab, start_lab
from ipsec_deploy.lab.shipped_scripts import SHIPPED_SCRIPTS
from ipsec_deploy.lab.topology import default_state_dir, load_topology
from ipsec_deploy.planner import build_plan

LAB_INVENTORY = Path(__file__).resolve().parents[2] / "inventory" / "lab.yaml"
USER = "CORP\\ipsec-admin"

BASE = """\
forests:
  corp.example: {}
connection:
  transport: http
  auth: negotiate
  username: CORP\\ipsec-admin
hosts:
  SRV1:
    address: 127.0.0.1
    ip: [10.0.1.10]
    domain: corp.example
    connection: {port: 45101}
  SRV2:
    address: 127.0.0.1
    ip: [10.0.1.20]
    domain: corp.example
    connection: {port: 45102}
"""


def load_text(tmp_path: Path, text: str):
    path = tmp_path / "inventory.yaml"
    path.write_text(text, encoding="utf-8")
    return load_inventory(path)


def topology_problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(InventoryError) as raised:
        load_topology(load_text(tmp_path, text))
    return [str(p) for p in raised.value.problems]


def line_number(text: str, fragment: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if fragment in line)


# The lab section


LAB_SECTION_ERRORS = [
    ("lab:\n  pasword: x\n", "pasword: x", "unknown key 'pasword' in the lab section (did you mean 'password'?)"),
    ("lab:\n  state_dir: x\n", "state_dir: x", "the lab section is missing the required key 'password'"),
    ("lab:\n  password: x\n  hosts:\n    SRV3: {}\n", "SRV3:", "unknown host 'SRV3' in the lab section"),
    ("lab:\n  password: x\n  hosts:\n    SRV1:\n      scheme: ftp\n", "scheme: ftp", "invalid scheme 'ftp'"),
    ("lab:\n  password: x\n  hosts:\n    SRV1:\n      faults:\n        latency_seconds: fast\n",
     "latency_seconds", "'latency_seconds' in faults of lab host 'SRV1' must be a number of seconds"),
    ("lab:\n  password: x\n  hosts:\n    SRV1:\n      faults:\n        fail_cmdlets:\n"
     "          - {cmdlet: New-NetIPsecRul, message: boom}\n",
     "cmdlet: New-NetIPsecRul", "unknown cmdlet 'New-NetIPsecRul'"),
    ("lab:\n  password: x\n  hosts:\n    SRV1:\n      foreign_rules:\n"
     "        - {DisplayName: old, Group: ipsec-deploy}\n",
     "Group: ipsec-deploy", "is in the managed group 'ipsec-deploy'"),
    ("lab:\n  password: x\n  hosts:\n    SRV1:\n      foreign_rules:\n"
     "        - {DisplayName: old, Group: Backup, RemoteAdress: [10.0.9.1]}\n",
     "RemoteAdress", "A parameter cannot be found that matches parameter name 'RemoteAdress'."),
    ("lab:\n  password: x\n  hosts:\n    SRV1:\n      foreign_rules:\n"
     "        - {DisplayName: old, Group: Backup, InboundSecurity: Always}\n",
     "InboundSecurity: Always", "Cannot convert value \"Always\""),
    ("lab:\n  password: x\n  hosts:\n    SRV1:\n      certificates:\n        - subject: CN=srv1\n",
     "subject: CN=srv1", "certificate 1 of lab host 'SRV1' is missing the required key 'issuer'"),
]


@pytest.mark.parametrize(("section", "fragment", "message"), LAB_SECTION_ERRORS)
def test_lab_section_error_has_line(tmp_path: Path, section: str, fragment: str, message: str) -> None:
    text = BASE + section

    problems = topology_problems(tmp_path, text)

    expected_prefix = f"{tmp_path / 'inventory.yaml'}:{line_number(text, fragment)}: "
    assert any(p.startswith(expected_prefix) and message in p for p in problems), problems


def test_missing_lab_section_is_reported(tmp_path: Path) -> None:
    problems = topology_problems(tmp_path, BASE)

    assert len(problems) == 1
    assert "the inventory has no 'lab' section" in problems[0]


@pytest.mark.parametrize("address", ["10.0.1.10", "db-srv01.corp.example", "192.168.56.10"])
def test_non_loopback_address_is_rejected(tmp_path: Path, address: str) -> None:
    text = BASE.replace("address: 127.0.0.1\n    ip: [10.0.1.20]", f"address: {address}\n    ip: [10.0.1.20]")
    text += "lab:\n  password: x\n"

    problems = topology_problems(tmp_path, text)

    line = line_number(text, f"address: {address}")
    assert len(problems) == 1
    assert problems[0].startswith(f"{tmp_path / 'inventory.yaml'}:{line}: ")
    assert "listen on loopback addresses only" in problems[0]


def test_unsupported_auth_is_rejected(tmp_path: Path) -> None:
    text = BASE.replace("auth: negotiate", "auth: kerberos") + "lab:\n  password: x\n"

    problems = topology_problems(tmp_path, text)

    assert any("uses auth kerberos, which the lab does not implement" in p for p in problems)


def test_topology_combines_inventory_and_lab(tmp_path: Path) -> None:
    text = BASE.replace("corp.example: {}", "corp.example: {trusts: [partner.example]}\n  partner.example: {}") + (
        "lab:\n  password: Lab-Passw0rd\n  state_dir: state\n  hosts:\n    SRV2:\n      scheme: https\n"
        "      trusted_forests: [other.example]\n"
        "      certificates:\n        - {issuer: 'CN=Corp Issuing CA 01', root_ca: 'CN=Corp Root'}\n"
        "      faults:\n        latency_seconds: 0.5\n        fail_cmdlets:\n"
        "          - {cmdlet: new-netipsecrule, object_name: 'app*', call_number: 2}\n"
    )

    topology = load_topology(load_text(tmp_path, text))

    assert topology.password == "Lab-Passw0rd"
    assert topology.state_dir == tmp_path / "state"
    first, second = topology.hosts["SRV1"], topology.hosts["SRV2"]
    assert (first.address, first.port, first.scheme, first.username) == ("127.0.0.1", 45101, "http", USER)
    assert second.scheme == "https"
    assert second.facts.addresses == ["10.0.1.20"]
    assert second.facts.domain == "corp.example"
    assert second.facts.trusted_forests == ["partner.example", "other.example"]
    certificate = second.facts.machine_certificates[0]
    assert (certificate.subject, certificate.issuer, certificate.chain_root) == (
        "CN=srv2.corp.example", "CN=Corp Issuing CA 01", "CN=Corp Root")
    assert second.faults.latency == 0.5
    fault = second.facts.fail_cmdlets[0]
    assert (fault.cmdlet, fault.object_name, fault.call_number) == ("New-NetIPsecRule", "app*", 2)


def test_default_state_dir_is_next_to_inventory() -> None:
    assert default_state_dir("inventory/lab.yaml") == Path("inventory/.ipsec-deploy/lab-state/lab")


def test_lab_inventory_loads_and_plans() -> None:
    inventory = load_inventory(LAB_INVENTORY)

    topology = load_topology(inventory)
    plan = build_plan(inventory)

    assert sorted(topology.hosts) == sorted(inventory.hosts)
    assert all(h.address == "127.0.0.1" for h in topology.hosts.values())
    assert len({h.port for h in topology.hosts.values()}) == len(topology.hosts)
    # Below every common ephemeral range, so no outgoing connection uses a lab port.
    assert all(1024 < h.port < 32768 for h in topology.hosts.values())
    assert all(h.facts.machine_certificates for h in topology.hosts.values())
    assert topology.hosts["DB-SRV01"].facts.foreign_rules[0]["Group"] == "Backup"
    assert {h.host.name for h in plan.hosts} == set(inventory.hosts)


# Lab hosts over the wire


def client(lab: RunningLab, host: str, **options: Any) -> WSMan:
    listener = lab.listeners[host]
    settings: dict[str, Any] = {"port": listener.port, "username": lab.topology.hosts[host].username,
                                "password": lab.password, "ssl": False, "auth": "negotiate",
                                "operation_timeout": 5, "connection_timeout": 2, "read_timeout": 8}
    settings.update(options)
    return WSMan(listener.host, **settings)


def run(lab: RunningLab, host: str, cmdlet: str, **parameters: Any) -> tuple[list[Any], PowerShell]:
    with RunspacePool(client(lab, host)) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet(cmdlet)
        for name, value in parameters.items():
            ps.add_parameter(name, value)
        return ps.invoke(), ps


def rule_names(lab: RunningLab, host: str) -> list[str]:
    output, _ = run(lab, host, "Get-NetIPsecRule")
    return sorted(o.adapted_properties["Name"] for o in output)


def test_rule_created_listed_and_removed(lab_factory) -> None:
    lab, _ = lab_factory(LAB_INVENTORY)

    output, ps = run(lab, "DB-SRV01", "New-NetIPsecRule", IPsecRuleName="probe", DisplayName="Probe",
                     Group="ipsec-deploy", RemoteAddress=["10.0.1.30"], InboundSecurity="Require",
                     OutboundSecurity="Require")
    assert ps.state == PSInvocationState.COMPLETED
    assert output[0].adapted_properties["Name"] == "probe"
    assert rule_names(lab, "DB-SRV01") == ["legacy-backup-agent", "probe"]

    run(lab, "DB-SRV01", "Remove-NetIPsecRule", Name="probe")
    assert rule_names(lab, "DB-SRV01") == ["legacy-backup-agent"]
    assert rule_names(lab, "APP-SRV01") == []


def test_wrong_parameter_name_is_error_record(lab_factory) -> None:
    lab, _ = lab_factory(LAB_INVENTORY)

    _, ps = run(lab, "APP-SRV01", "New-NetIPsecRule", DisplayName="x", RemoteAdress=["10.0.1.20"])

    assert ps.state == PSInvocationState.FAILED
    error = ps.streams.error[0]
    assert str(error) == "A parameter cannot be found that matches parameter name 'RemoteAdress'."
    assert error.fq_error == "NamedParameterNotFound,New-NetIPsecRule"


def test_wrong_enum_value_is_error_record(lab_factory) -> None:
    lab, _ = lab_factory(LAB_INVENTORY)

    _, ps = run(lab, "APP-SRV01", "New-NetIPsecRule", DisplayName="x", InboundSecurity="Always")

    assert ps.state == PSInvocationState.FAILED
    error = ps.streams.error[0]
    assert str(error).startswith(
        "Cannot bind parameter 'InboundSecurity'. Cannot convert value \"Always\" to type "
        "\"Microsoft.PowerShell.Cmdletization.GeneratedTypes.NetSecurity.SecurityPolicy\"."
    )
    assert error.fq_error == "CannotConvertArgumentNoMessage,New-NetIPsecRule"


def test_state_persists_across_starts(lab_factory, tmp_path: Path) -> None:
    state_dir = tmp_path / "shared-state"
    first, rewritten = lab_factory(LAB_INVENTORY, state_dir=state_dir)
    run(first, "DB-SRV01", "New-NetIPsecRule", IPsecRuleName="kept", DisplayName="Kept", Group="ipsec-deploy")
    first.stop()

    second, _ = lab_factory(rewritten, state_dir=state_dir)

    # The foreign rule is created on the first start only.
    assert rule_names(second, "DB-SRV01") == ["kept", "legacy-backup-agent"]
    assert second.hosts["DB-SRV01"].write_count == 1


def test_lab_factory_rewrites_ports(lab_factory) -> None:
    lab, rewritten = lab_factory(LAB_INVENTORY)

    inventory = load_inventory(rewritten)

    for name, listener in lab.listeners.items():
        assert inventory.hosts[name].connection.effective_port == listener.port
    assert yaml.safe_load(rewritten.read_text())["lab"]["password"] == lab.password


FAULTS_INVENTORY = """\
forests: {corp.example: {}}
connection: {transport: http, auth: negotiate, username: CORP\\\\ipsec-admin}
hosts:
  REFUSING: {address: 127.0.0.1, ip: [10.0.2.1], domain: corp.example, connection: {port: 45201}}
  REJECTING: {address: 127.0.0.1, ip: [10.0.2.2], domain: corp.example, connection: {port: 45202}}
  SLOW: {address: 127.0.0.1, ip: [10.0.2.3], domain: corp.example, connection: {port: 45203}}
  FAILING: {address: 127.0.0.1, ip: [10.0.2.4], domain: corp.example, connection: {port: 45204}}
lab:
  password: Lab-Passw0rd
  hosts:
    REFUSING: {faults: {refuse_connections: true}}
    REJECTING: {faults: {reject_credentials: true}}
    SLOW: {faults: {latency_seconds: 0.6}}
    FAILING:
      faults:
        fail_cmdlets:
          - {cmdlet: New-NetIPsecRule, message: The RPC server is unavailable., object_name: "db-*"}
"""


def test_faults_reach_pypsrp(lab_factory) -> None:
    lab, _ = lab_factory(FAULTS_INVENTORY)

    with pytest.raises(requests.exceptions.ConnectionError):
        run(lab, "REFUSING", "Get-NetIPsecRule")
    with pytest.raises(AuthenticationError):
        run(lab, "REJECTING", "Get-NetIPsecRule")
    with pytest.raises(requests.exceptions.ReadTimeout):
        with RunspacePool(client(lab, "SLOW", read_timeout=0.2)) as pool:
            PowerShell(pool).add_cmdlet("Get-NetIPsecRule").invoke()

    _, ps = run(lab, "FAILING", "New-NetIPsecRule", DisplayName="db-1")
    assert str(ps.streams.error[0]) == "The RPC server is unavailable."
    assert ps.streams.error[0].fq_error == "Windows System Error 1359,New-NetIPsecRule"
    output, ps = run(lab, "FAILING", "New-NetIPsecRule", DisplayName="web-1")
    assert not ps.streams.error
    assert output[0].adapted_properties["DisplayName"] == "web-1"


# Negotiation after a deployment through apply_changes.ps1


def to_operation(call: CmdletCall) -> dict[str, Any]:
    """Turn a planned New- call into an apply_changes.ps1 operation; nested calls become proposals."""
    parameters: dict[str, Any] = {}
    proposals: dict[str, list[dict[str, Any]]] = {}
    for name, value in call.parameters:
        if isinstance(value, tuple) and value and isinstance(value[0], CmdletCall):
            proposals[name] = [to_operation(nested) for nested in value]
        elif isinstance(value, tuple):
            parameters[name] = list(value)
        else:
            parameters[name] = value
    return {"Cmdlet": call.name, "Parameters": parameters, "Proposals": proposals, "Undo": []}


def sa_code(cmdlet: str, property_name: str, label: str) -> int:
    """Return the number an SA property uses for an algorithm label, from the spec's value map."""
    for prop in load_spec().sa_output[cmdlet]["properties"]:
        if prop["name"] == property_name:
            return next(int(code) for code, text in prop["value_map_win32_docs"].items() if text == label)
    raise KeyError(property_name)


def test_test_net_connection_yields_planned_sas(lab_factory) -> None:
    lab, _ = lab_factory(LAB_INVENTORY)
    inventory = load_inventory(LAB_INVENTORY)
    plan = build_plan(inventory)
    apply_changes = next(s for s in SHIPPED_SCRIPTS if s.file_name == "apply_changes.ps1").text()

    for name in ("APP-SRV01", "DB-SRV01"):
        operations = [to_operation(o.new_call(plan.policy_store)) for o in plan.host(name).objects]
        with RunspacePool(client(lab, name)) as pool:
            ps = PowerShell(pool)
            ps.add_script(apply_changes).add_parameter("Operations", operations)
            results = ps.invoke()
        assert [r["Status"] for r in results] == ["Applied"] * len(operations), results[-1]

    output, _ = run(lab, "APP-SRV01", "Test-NetConnection", ComputerName="10.0.1.20", Port=445)
    assert output[0].adapted_properties["TcpTestSucceeded"] is True

    main_mode, _ = run(lab, "APP-SRV01", "Get-NetIPsecMainModeSA")
    quick_mode, _ = run(lab, "APP-SRV01", "Get-NetIPsecQuickModeSA")
    sa = main_mode[0].adapted_properties
    assert sa["RemoteEndpoint"] == "10.0.1.20"
    assert sa["CipherAlgorithm"] == sa_code("Get-NetIPsecMainModeSA", "CipherAlgorithm", "AES-256")
    assert sa["HashAlgorithm"] == sa_code("Get-NetIPsecMainModeSA", "HashAlgorithm", "SHA-256")
    assert sa["GroupId"] == sa_code("Get-NetIPsecMainModeSA", "GroupId", "DH Group 14")
    quick = quick_mode[0].adapted_properties
    assert quick["FirstCipherAlgorithm"] == sa_code("Get-NetIPsecQuickModeSA", "FirstCipherAlgorithm", "AES-256")
    assert quick["PfsGroupId"] == sa_code("Get-NetIPsecQuickModeSA", "PfsGroupId", "DH Group 14")
    assert quick["TransportLayerFilterName"].startswith("ipsec-deploy-rule-app-db")


def test_serve_lab_prints_hosts_and_stops(tmp_path: Path) -> None:
    inventory = load_inventory(LAB_INVENTORY)
    output = io.StringIO()
    stop = threading.Event()
    server = threading.Thread(target=serve_lab, args=(inventory, tmp_path / "state", Console(file=output, width=200)),
                              kwargs={"stop": stop, "ports": {name: 0 for name in inventory.hosts}})
    server.start()
    for _ in range(100):
        if "Ctrl-C" in output.getvalue():
            break
        time.sleep(0.05)

    stop.set()
    server.join(timeout=10)

    text = output.getvalue()
    assert not server.is_alive()
    assert "simulated" in text
    assert "not Windows" in text
    for name in inventory.hosts:
        assert name in text
    assert "10.0.1.10, fd00:10::10" in text
    assert "http://127.0.0.1:" in text
