"""The shipped scripts read_state.ps1 and apply_changes.ps1, run on a lab host over the real wire."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest
from pypsrp.complex_objects import PSInvocationState
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from ipsec_deploy.lab import shipped_scripts
from ipsec_deploy.lab.netsecurity import CmdletFault, HostFacts, LabHost, LabNetwork, NetSecurityHandler, ScriptRegistry
from ipsec_deploy.lab.server import LabListener

USER = "CORP\\ipsec-admin"
PASSWORD = "Lab-Passw0rd"
GROUP = "ipsec-deploy"
STORE = "PersistentStore"
AUTHORITY = "CN=Corp Issuing CA 01, O=Corp, C=US"


def script_text(name: str) -> str:
    return resources.files("ipsec_deploy.scripts").joinpath(name).read_text("utf-8")


READ_STATE = script_text("read_state.ps1")
APPLY_CHANGES = script_text("apply_changes.ps1")


@dataclasses.dataclass
class Lab:
    host: LabHost
    listener: LabListener

    def run(self, text: str, **parameters: Any) -> tuple[list[Any], PowerShell]:
        wsman = WSMan(self.listener.host, port=self.listener.port, username=USER, password=PASSWORD, ssl=False,
                      auth="basic", encryption="never", operation_timeout=5, read_timeout=8)
        with RunspacePool(wsman) as pool:
            ps = PowerShell(pool)
            ps.add_script(text)
            for name, value in parameters.items():
                ps.add_parameter(name, value)
            output = ps.invoke()
        return output, ps


def start_lab(faults: list[CmdletFault] | None = None) -> Iterator[Lab]:
    facts = HostFacts("DB-SRV01", ["10.0.1.20"], domain="corp.example", fail_cmdlets=faults or [])
    host = LabNetwork().add_host(facts)
    with LabListener(NetSecurityHandler(host), accounts={USER: PASSWORD}, auth=("basic",)) as listener:
        yield Lab(host, listener)


@pytest.fixture
def lab() -> Iterator[Lab]:
    yield from start_lab()


def operation(cmdlet: str, undo: list[dict[str, Any]] | None = None,
              proposals: dict[str, list[dict[str, Any]]] | None = None, **parameters: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"Cmdlet": cmdlet, "Parameters": parameters}
    if proposals is not None:
        result["Proposals"] = proposals
    if undo is not None:
        result["Undo"] = undo
    return result


def remove(cmdlet: str, name: str, key: str = "Name") -> dict[str, Any]:
    return operation(cmdlet, **{key: name, "PolicyStore": STORE})


def identity(name: str) -> dict[str, Any]:
    return {"PolicyStore": STORE, "DisplayName": f"ipsec-deploy: {name}", "Description": "managed", "Group": GROUP}


def create_operations() -> list[dict[str, Any]]:
    """New- operations for one host, as the executor sends them: sets first, then the rules."""
    return [
        operation(
            "New-NetIPsecPhase1AuthSet", Name="p1-corp", **identity("p1-corp"),
            proposals={"Proposal": [
                operation("New-NetIPsecAuthProposal", Machine=True, Kerberos=True),
                operation("New-NetIPsecAuthProposal", Machine=True, Cert=True, Authority=AUTHORITY,
                          AuthorityType="Intermediate"),
                operation("New-NetIPsecAuthProposal", Machine=True, PreSharedKey="not-for-the-wire"),
            ]},
            undo=[remove("Remove-NetIPsecPhase1AuthSet", "p1-corp")],
        ),
        operation(
            "New-NetIPsecMainModeCryptoSet", Name="mm-strong", MaxMinutes=240, **identity("mm-strong"),
            proposals={"Proposal": [
                operation("New-NetIPsecMainModeCryptoProposal", Encryption="AES256", Hash="SHA256", KeyExchange="DH14"),
            ]},
            undo=[remove("Remove-NetIPsecMainModeCryptoSet", "mm-strong")],
        ),
        operation(
            "New-NetIPsecQuickModeCryptoSet", Name="qm-strong", PerfectForwardSecrecyGroup="DH14",
            **identity("qm-strong"),
            proposals={"Proposal": [
                operation("New-NetIPsecQuickModeCryptoProposal", Encapsulation="ESP", Encryption="AES256",
                          ESPHash="SHA256"),
            ]},
            undo=[remove("Remove-NetIPsecQuickModeCryptoSet", "qm-strong")],
        ),
        operation(
            "New-NetIPsecMainModeRule", Name="mm-db", **identity("mm-db"), Enabled="True",
            LocalAddress=["10.0.1.20"], RemoteAddress=["10.0.1.0/24"], MainModeCryptoSet="mm-strong",
            Phase1AuthSet="p1-corp",
            undo=[remove("Remove-NetIPsecMainModeRule", "mm-db")],
        ),
        operation(
            "New-NetIPsecRule", IPsecRuleName="reports-sql", **identity("reports-sql"), Enabled="True",
            Mode="Transport", InboundSecurity="Require", OutboundSecurity="Require",
            LocalAddress=["10.0.1.20"], RemoteAddress=["10.0.1.30"], Protocol="TCP", LocalPort=["1433"],
            Phase1AuthSet="p1-corp", QuickModeCryptoSet="qm-strong", KeyModule="Default",
            undo=[remove("Remove-NetIPsecRule", "reports-sql", key="IPsecRuleName")],
        ),
    ]


def managed_objects(host: LabHost) -> list[str]:
    names = []
    for cmdlet in ("Get-NetIPsecRule", "Get-NetIPsecMainModeRule", "Get-NetIPsecPhase1AuthSet",
                   "Get-NetIPsecMainModeCryptoSet", "Get-NetIPsecQuickModeCryptoSet"):
        names += [o.properties["Name"] for o in host.invoke_checked(cmdlet) if o.properties["Group"] == GROUP]
    return names


def test_apply_changes_reports_each_operation(lab: Lab) -> None:
    output, ps = lab.run(APPLY_CHANGES, Operations=create_operations())

    assert ps.state == PSInvocationState.COMPLETED
    assert output == [{"Index": i, "Status": "Applied"} for i in range(5)]
    assert sorted(managed_objects(lab.host)) == ["mm-db", "mm-strong", "p1-corp", "qm-strong", "reports-sql"]


def test_read_state_returns_managed_sets(lab: Lab) -> None:
    lab.run(APPLY_CHANGES, Operations=create_operations())

    output, ps = lab.run(READ_STATE, Group=GROUP, PolicyStore=STORE)

    assert ps.state == PSInvocationState.COMPLETED
    by_name = {item["Name"]: item for item in output if item["Kind"] != "computer"}
    phase1 = by_name["p1-corp"]
    assert phase1["Kind"] == "phase1_auth_set"
    assert phase1["DisplayName"] == "ipsec-deploy: p1-corp"
    assert phase1["Description"] == "managed"
    assert [p["AuthenticationMethod"] for p in phase1["Proposals"]] == ["MachineKerberos", "MachineCert", "PresharedKey"]
    assert all(p["CimClass"] == "MSFT_NetIKEAuthProposal" for p in phase1["Proposals"])
    assert phase1["Proposals"][1]["Authority"] == AUTHORITY
    assert phase1["Proposals"][1]["AuthorityType"] == "Intermediate"
    assert all("PreSharedKey" not in p for p in phase1["Proposals"])

    main_mode = by_name["mm-strong"]
    assert main_mode["MaxMinutes"] == "240"
    assert main_mode["Proposals"] == [{"CimClass": "MSFT_NetIKEMMCryptoProposal", "Encryption": "AES256",
                                       "Hash": "SHA256", "KeyExchange": "DH14"}]
    quick_mode = by_name["qm-strong"]
    assert quick_mode["PerfectForwardSecrecyGroup"] == "DH14"
    assert quick_mode["Proposals"][0]["Encapsulation"] == "ESP"
    assert quick_mode["Proposals"][0]["MaxMinutes"] == "60"


def test_read_state_returns_rules_through_filters(lab: Lab) -> None:
    lab.host.invoke_checked("New-NetIPsecRule", {
        "IPsecRuleName": "legacy", "DisplayName": "Legacy backup", "Group": "Backup",
        "RemoteAddress": ["10.0.9.0/24"], "InboundSecurity": "Request", "OutboundSecurity": "Request",
    })
    lab.run(APPLY_CHANGES, Operations=create_operations())

    output, _ = lab.run(READ_STATE, Group=GROUP, PolicyStore=STORE)

    by_name = {item["Name"]: item for item in output if item["Kind"] != "computer"}
    assert by_name["mm-db"] == {
        "Kind": "main_mode_rule", "Name": "mm-db", "DisplayName": "ipsec-deploy: mm-db",
        "Description": "managed", "Group": GROUP, "Enabled": "True", "MainModeCryptoSet": "mm-strong",
        "Phase1AuthSet": "p1-corp", "LocalAddress": ["10.0.1.20"],
        "RemoteAddress": ["10.0.1.0/255.255.255.0"],
    }
    assert by_name["reports-sql"] == {
        "Kind": "ipsec_rule", "Name": "reports-sql", "DisplayName": "ipsec-deploy: reports-sql",
        "Group": GROUP, "Enabled": "True", "Mode": "Transport", "InboundSecurity": "Require",
        "OutboundSecurity": "Require", "LocalAddress": ["10.0.1.20"], "RemoteAddress": ["10.0.1.30"],
        "Protocol": "TCP", "LocalPort": ["1433"], "RemotePort": ["Any"], "Description": "managed",
        "Phase1AuthSet": "p1-corp", "Phase2AuthSet": "Default", "QuickModeCryptoSet": "qm-strong",
        "KeyModule": "Default",
    }
    # A rule of another group is summarised, without its sets or description.
    assert by_name["legacy"] == {
        "Kind": "foreign_ipsec_rule", "Name": "legacy", "DisplayName": "Legacy backup", "Group": "Backup",
        "Enabled": "True", "Mode": "Transport", "InboundSecurity": "Request", "OutboundSecurity": "Request",
        "LocalAddress": ["Any"], "RemoteAddress": ["10.0.9.0/255.255.255.0"], "Protocol": "Any",
        "LocalPort": ["Any"], "RemotePort": ["Any"],
    }


def test_read_state_of_empty_store(lab: Lab) -> None:
    output, ps = lab.run(READ_STATE, Group=GROUP, PolicyStore=STORE)

    assert ps.state == PSInvocationState.COMPLETED
    # Only the computer's NetBIOS name, which the executor compares with the inventory.
    assert output == [{"Kind": "computer", "ComputerName": "DB-SRV01"}]


def test_failure_rolls_back_applied_operations() -> None:
    # The third New- call of the change set fails.
    fault = CmdletFault("New-NetIPsecQuickModeCryptoSet", "The RPC server is unavailable.", call_number=1)
    for lab in start_lab([fault]):
        output, ps = lab.run(APPLY_CHANGES, Operations=create_operations())

        assert ps.state == PSInvocationState.COMPLETED
        assert output[:2] == [{"Index": 0, "Status": "Applied"}, {"Index": 1, "Status": "Applied"}]
        assert output[2] == {
            "Index": 2, "Status": "Failed", "Message": "The RPC server is unavailable.",
            "ErrorId": "Windows System Error 1359,New-NetIPsecQuickModeCryptoSet", "Category": "NotSpecified",
            "RolledBack": 2, "UndoErrors": [],
        }
        assert len(output) == 3
        assert managed_objects(lab.host) == []


def test_rollback_reports_undo_errors(lab: Lab) -> None:
    kerberos = {"Proposal": [operation("New-NetIPsecAuthProposal", Machine=True, Kerberos=True)]}
    operations = [
        operation("New-NetIPsecPhase1AuthSet", Name="p1", **identity("p1"), proposals=kerberos,
                  undo=[remove("Remove-NetIPsecPhase1AuthSet", "no-such-set")]),
        # No Undo: nothing runs for it during the rollback.
        operation("New-NetIPsecPhase2AuthSet", Name="p2", **identity("p2"), proposals=kerberos),
        operation("New-NetIPsecRule", IPsecRuleName="r", **identity("r"), Phase1AuthSet="missing-set"),
    ]

    output, _ = lab.run(APPLY_CHANGES, Operations=operations)

    failure = output[-1]
    assert failure["Index"] == 2
    assert failure["Category"] == "ObjectNotFound"
    assert "missing-set" in failure["Message"]
    assert failure["RolledBack"] == 2
    assert failure["UndoErrors"] == [
        "No MSFT_NetIKEP1AuthSet objects found with property 'Name' equal to 'no-such-set'.  "
        "Verify the value of the property and retry."
    ]


def test_cmdlet_outside_allow_list_fails(lab: Lab) -> None:
    operations = [operation("Remove-Item", Path="C:\\Windows", Recurse=True)]

    output, _ = lab.run(APPLY_CHANGES, Operations=operations)

    message = "ipsec-deploy does not run the cmdlet 'Remove-Item'."
    assert output == [{"Index": 0, "Status": "Failed", "Message": message, "ErrorId": message,
                       "Category": "OperationStopped", "RolledBack": 0, "UndoErrors": []}]


def test_wrong_enum_value_fails_operation(lab: Lab) -> None:
    operations = [operation("New-NetIPsecRule", IPsecRuleName="r", **identity("r"), InboundSecurity="Always")]

    output, _ = lab.run(APPLY_CHANGES, Operations=operations)

    assert output[0]["Status"] == "Failed"
    assert output[0]["ErrorId"] == "CannotConvertArgumentNoMessage,New-NetIPsecRule"
    assert output[0]["Category"] == "InvalidArgument"
    assert output[0]["Message"].startswith(
        "Cannot bind parameter 'InboundSecurity'. Cannot convert value \"Always\" to type "
        "\"Microsoft.PowerShell.Cmdletization.GeneratedTypes.NetSecurity.SecurityPolicy\"."
    )


def test_missing_script_parameter_fails(lab: Lab) -> None:
    _, ps = lab.run(READ_STATE, Group=GROUP)

    assert ps.state == PSInvocationState.FAILED
    assert "PolicyStore" in str(ps.streams.error[0])


def test_altered_script_is_rejected(lab: Lab) -> None:
    _, ps = lab.run(READ_STATE + "\n# edited\n", Group=GROUP, PolicyStore=STORE)

    assert ps.state == PSInvocationState.FAILED
    assert ps.streams.error[0].fq_error == "ScriptsNotAllowed"


def test_counterparts_match_script_files() -> None:
    for script in shipped_scripts.SHIPPED_SCRIPTS:
        assert script.current_sha256() == script.sha256, (
            f"{script.file_name} changed: update its counterpart in ipsec_deploy/lab/shipped_scripts.py, "
            "then its sha256 there"
        )


def test_stale_counterpart_is_not_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    stale = dataclasses.replace(shipped_scripts.SHIPPED_SCRIPTS[0], sha256="0" * 64)
    monkeypatch.setattr(shipped_scripts, "SHIPPED_SCRIPTS", (stale, shipped_scripts.SHIPPED_SCRIPTS[1]))
    registry = ScriptRegistry()

    assert shipped_scripts.register_shipped_scripts(registry) == ["read_state.ps1"]
    assert registry.find(READ_STATE) is None
    assert registry.find(APPLY_CHANGES) is not None
