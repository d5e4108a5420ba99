"""CRUD, filters, piping, referential integrity, faults and write counting of the emulated policy store."""

from __future__ import annotations

import pytest

from ipsec_deploy.lab.netsecurity import CmdletFault, HostFacts, LabHost, LabNetwork, NetSecurityHandler
from ipsec_deploy.lab.netsecurity.requests import command, pipeline

RULE_TYPE = "Microsoft.Management.Infrastructure.CimInstance#root/standardcimv2/MSFT_NetConSecRule"


@pytest.fixture
def host() -> LabHost:
    network = LabNetwork()
    return network.add_host(HostFacts("SRV1", ["10.0.1.10"], domain="corp.example"))


def run(host: LabHost, name: str, *positional, **parameters):
    return NetSecurityHandler(host).run_pipeline(pipeline(command(name, *positional, **parameters)))


def make_sets(host: LabHost, prefix: str = "ipsec-deploy") -> None:
    """Create a phase 1 auth set, a main mode and a quick mode crypto set named after ``prefix``."""
    kerberos = host.invoke_checked("New-NetIPsecAuthProposal", {"Machine": True, "Kerberos": True})
    host.invoke_checked("New-NetIPsecPhase1AuthSet", {"Name": f"{prefix}-p1", "DisplayName": "P1", "Proposal": kerberos})
    main_mode = host.invoke_checked("New-NetIPsecMainModeCryptoProposal",
                                    {"Encryption": "AES256", "Hash": "SHA256", "KeyExchange": "DH14"})
    host.invoke_checked("New-NetIPsecMainModeCryptoSet", {"Name": f"{prefix}-mm", "DisplayName": "MM", "Proposal": main_mode})
    quick_mode = host.invoke_checked("New-NetIPsecQuickModeCryptoProposal",
                                     {"Encapsulation": "ESP", "ESPHash": "SHA256", "Encryption": "AES256"})
    host.invoke_checked("New-NetIPsecQuickModeCryptoSet", {"Name": f"{prefix}-qm", "DisplayName": "QM",
                                                           "Proposal": quick_mode, "PerfectForwardSecrecyGroup": "DH14"})


def test_new_rule_windows_properties(host):
    result = run(host, "New-NetIPsecRule", DisplayName="SMB", IPsecRuleName="r1", Group="ipsec-deploy",
                 InboundSecurity="Require", OutboundSecurity="Request", RemoteAddress=["10.0.1.0/24"],
                 Protocol="TCP", LocalPort="445")

    assert result.state == "Completed", result.failure
    rule = result.output[0]
    assert rule.type_names[:4] == [RULE_TYPE, "Microsoft.Management.Infrastructure.CimInstance#MSFT_NetConSecRule",
                                   "Microsoft.Management.Infrastructure.CimInstance", "System.Object"]
    properties = rule.properties
    assert properties["Name"] == "r1"
    assert properties["DisplayGroup"] == "ipsec-deploy"
    assert properties["Enabled"] == "True"
    assert properties["Mode"] == "Transport"
    assert properties["Phase1AuthSet"] == "Default"
    assert properties["PrimaryStatus"] == "OK"
    assert properties["PolicyStoreSource"] == "PersistentStore"
    assert properties["PolicyStoreSourceType"] == "Local"
    assert properties["RemoteAddress"] == ["10.0.1.0/24"]
    assert properties["LocalPort"] == ["445"]
    assert host.write_count == 1


def test_duplicate_name_rejected(host):
    run(host, "New-NetIPsecRule", DisplayName="a", IPsecRuleName="r1")

    result = run(host, "New-NetIPsecRule", DisplayName="b", IPsecRuleName="r1")

    assert result.state == "Completed"
    assert len(result.errors) == 1
    assert result.errors[0].message == "Cannot create a file when that file already exists."
    assert result.errors[0].fully_qualified_error_id == "Windows System Error 183,New-NetIPsecRule"
    assert result.errors[0].category == "ResourceExists"


def test_error_action_stop_makes_error_terminating(host):
    run(host, "New-NetIPsecRule", DisplayName="a", IPsecRuleName="r1")

    result = run(host, "New-NetIPsecRule", DisplayName="b", IPsecRuleName="r1", ErrorAction="Stop")

    assert result.state == "Failed"
    assert result.failure.fully_qualified_error_id == "Windows System Error 183,New-NetIPsecRule"


def test_get_by_name_not_found(host):
    result = run(host, "Get-NetIPsecRule", Name="missing")

    assert result.output == []
    assert result.errors[0].message == (
        "No MSFT_NetConSecRule objects found with property 'Name' equal to 'missing'.  "
        "Verify the value of the property and retry."
    )
    assert result.errors[0].fully_qualified_error_id == "CmdletizationQuery_NotFound_Name,Get-NetIPsecRule"
    assert result.errors[0].category == "ObjectNotFound"


def test_get_filters(host):
    run(host, "New-NetIPsecRule", DisplayName="ours 1", IPsecRuleName="a", Group="ipsec-deploy")
    run(host, "New-NetIPsecRule", DisplayName="ours 2", IPsecRuleName="b", Group="ipsec-deploy")
    run(host, "New-NetIPsecRule", DisplayName="foreign", IPsecRuleName="c", Group="other", Enabled="False")

    by_group = run(host, "Get-NetIPsecRule", Group="ipsec-*")
    by_display_name = run(host, "Get-NetIPsecRule", DisplayName="ours 2")
    by_enabled = run(host, "Get-NetIPsecRule", Enabled="False")
    wildcard_miss = run(host, "Get-NetIPsecRule", Name="zzz*")

    assert [o.properties["Name"] for o in by_group.output] == ["a", "b"]
    assert [o.properties["Name"] for o in by_display_name.output] == ["b"]
    assert [o.properties["Name"] for o in by_enabled.output] == ["c"]
    assert wildcard_miss.output == []
    assert wildcard_miss.errors == []


def test_set_enable_disable_rename(host):
    run(host, "New-NetIPsecRule", DisplayName="r", IPsecRuleName="r1")

    set_result = run(host, "Set-NetIPsecRule", IPsecRuleName="r1", InboundSecurity="Require", NewDisplayName="R",
                     PassThru=True)
    disabled = run(host, "Disable-NetIPsecRule", Name="r1", PassThru=True)
    enabled = run(host, "Enable-NetIPsecRule", DisplayName="R", PassThru=True)
    renamed = run(host, "Rename-NetIPsecRule", Name="r1", NewName="r2", PassThru=True)

    assert set_result.output[0].properties["InboundSecurity"] == "Require"
    assert set_result.output[0].properties["DisplayName"] == "R"
    assert disabled.output[0].properties["Enabled"] == "False"
    assert enabled.output[0].properties["Enabled"] == "True"
    assert renamed.output[0].properties["Name"] == "r2"
    assert host.write_count == 5


def test_sets_crud_and_properties(host):
    make_sets(host)

    phase1 = run(host, "Get-NetIPsecPhase1AuthSet", Name="ipsec-deploy-p1").output[0]
    main_mode = run(host, "Get-NetIPsecMainModeCryptoSet", Name="ipsec-deploy-mm").output[0]
    quick_mode = run(host, "Get-NetIPsecQuickModeCryptoSet", Name="ipsec-deploy-qm").output[0]

    assert phase1.type_names[0].endswith("/MSFT_NetIKEP1AuthSet")
    assert phase1.properties["Proposal"][0].properties["AuthenticationMethod"] == "MachineKerberos"
    assert main_mode.properties["Proposal"][0].properties == {"Encryption": "AES256", "Hash": "SHA256", "KeyExchange": "DH14"}
    assert main_mode.properties["MaxMinutes"] == 480
    assert quick_mode.properties["PerfectForwardSecrecyGroup"] == "DH14"
    assert quick_mode.properties["Proposal"][0].type_names[0].endswith("/MSFT_NetIKEQMCryptoProposal")

    changed = run(host, "Set-NetIPsecQuickModeCryptoSet", Name="ipsec-deploy-qm", PerfectForwardSecrecyGroup="DH19",
                  PassThru=True)
    assert changed.output[0].properties["PerfectForwardSecrecyGroup"] == "DH19"

    removed = run(host, "Remove-NetIPsecMainModeCryptoSet", Name="ipsec-deploy-mm")
    assert removed.errors == []
    assert run(host, "Get-NetIPsecMainModeCryptoSet", Name="ipsec-deploy-mm").output == []


def test_main_mode_rule_crud(host):
    make_sets(host)

    created = run(host, "New-NetIPsecMainModeRule", Name="mm1", DisplayName="MM rule", MainModeCryptoSet="ipsec-deploy-mm",
                  Phase1AuthSet="ipsec-deploy-p1", RemoteAddress="10.0.1.0/24")
    disabled = run(host, "Disable-NetIPsecMainModeRule", Name="mm1", PassThru=True)
    removed = run(host, "Remove-NetIPsecMainModeRule", Name="mm1")

    assert created.output[0].properties["MainModeCryptoSet"] == "ipsec-deploy-mm"
    assert created.output[0].type_names[0].endswith("/MSFT_NetMainModeRule")
    assert disabled.output[0].properties["Enabled"] == "False"
    assert removed.errors == []


def test_remove_set_in_use_fails(host):
    make_sets(host)
    run(host, "New-NetIPsecRule", DisplayName="r", IPsecRuleName="r1", Phase1AuthSet="ipsec-deploy-p1")

    result = run(host, "Remove-NetIPsecPhase1AuthSet", Name="ipsec-deploy-p1")

    assert result.errors[0].category == "ResourceBusy"
    assert "'r1'" in result.errors[0].message
    assert run(host, "Get-NetIPsecPhase1AuthSet", Name="ipsec-deploy-p1").output


def test_rule_with_missing_set_rejected(host):
    result = run(host, "New-NetIPsecRule", DisplayName="r", QuickModeCryptoSet="nope")

    assert result.errors[0].category == "ObjectNotFound"
    assert "'nope'" in result.errors[0].message
    assert run(host, "Get-NetIPsecRule").output == []


def test_pipe_get_into_remove(host):
    run(host, "New-NetIPsecRule", DisplayName="a", IPsecRuleName="a", Group="ipsec-deploy")
    run(host, "New-NetIPsecRule", DisplayName="b", IPsecRuleName="b", Group="ipsec-deploy")
    run(host, "New-NetIPsecRule", DisplayName="c", IPsecRuleName="c", Group="other")

    result = NetSecurityHandler(host).run_pipeline(pipeline(
        command("Get-NetIPsecRule", Group="ipsec-deploy"),
        command("Remove-NetIPsecRule"),
    ))

    assert result.state == "Completed", result.failure
    assert [o.properties["Name"] for o in run(host, "Get-NetIPsecRule").output] == ["c"]


def test_pipe_empty_get_into_remove(host):
    result = NetSecurityHandler(host).run_pipeline(pipeline(
        command("Get-NetIPsecRule", Group="none", ErrorAction="SilentlyContinue"),
        command("Remove-NetIPsecRule"),
    ))

    assert result.state == "Completed", result.failure
    assert result.errors == []


def test_active_store_is_read_only_view(host):
    host.facts.applied_gpos.append("corp.example\\IPsec")
    run(host, "New-NetIPsecRule", DisplayName="local", IPsecRuleName="local")
    run(host, "New-NetIPsecRule", DisplayName="gpo", IPsecRuleName="gpo", PolicyStore="corp.example\\IPsec")

    active = run(host, "Get-NetIPsecRule", PolicyStore="ActiveStore")
    persistent = run(host, "Get-NetIPsecRule")
    write = run(host, "New-NetIPsecRule", DisplayName="x", PolicyStore="ActiveStore")

    assert sorted(o.properties["Name"] for o in active.output) == ["gpo", "local"]
    gpo_rule = next(o for o in active.output if o.properties["Name"] == "gpo")
    assert gpo_rule.properties["PolicyStoreSourceType"] == "GroupPolicy"
    assert [o.properties["Name"] for o in persistent.output] == ["local"]
    assert write.errors[0].fully_qualified_error_id == "Windows System Error 50,New-NetIPsecRule"


def test_gpo_session_writes_to_gpo(host):
    session = run(host, "Open-NetGPO", PolicyStore="corp.example\\IPsec").output[0]

    created = run(host, "New-NetIPsecRule", DisplayName="r", GPOSession=session)
    listed = run(host, "Get-NetIPsecRule", PolicyStore="corp.example\\IPsec")
    saved = run(host, "Save-NetGPO", GPOSession=session)

    assert created.errors == []
    assert len(listed.output) == 1
    assert saved.state == "Completed"


def test_invalid_address_and_ports_rejected(host):
    bad_address = run(host, "New-NetIPsecRule", DisplayName="r", RemoteAddress="10.0.1.999")
    ports_without_protocol = run(host, "New-NetIPsecRule", DisplayName="r", LocalPort="445")

    assert bad_address.errors[0].message.startswith("The address is invalid.")
    assert ports_without_protocol.errors[0].category == "InvalidArgument"


def test_fault_for_one_object(host):
    host.faults.append(CmdletFault("New-NetIPsecRule", "The RPC server is unavailable.", object_name="second"))

    first = run(host, "New-NetIPsecRule", DisplayName="first")
    second = run(host, "New-NetIPsecRule", DisplayName="second")

    assert first.errors == []
    assert second.errors[0].message == "The RPC server is unavailable."
    assert second.errors[0].fully_qualified_error_id.endswith(",New-NetIPsecRule")
    assert [o.properties["DisplayName"] for o in run(host, "Get-NetIPsecRule").output] == ["first"]


def test_fault_on_nth_call_from_facts():
    network = LabNetwork()
    facts = HostFacts("SRV2", ["10.0.1.11"], fail_cmdlets={"Set-NetIPsecRule": {"message": "Access is denied.",
                                                                              "call_number": 2}})
    host = network.add_host(facts)
    run(host, "New-NetIPsecRule", DisplayName="r", IPsecRuleName="r1")

    first = run(host, "Set-NetIPsecRule", Name="r1", Description="one")
    second = run(host, "Set-NetIPsecRule", Name="r1", Description="two", ErrorAction="Stop")

    assert first.errors == []
    assert second.state == "Failed"
    assert second.failure.message == "Access is denied."


def test_foreign_rules_seeded_without_writes():
    network = LabNetwork()
    facts = HostFacts("SRV3", ["10.0.1.12"], foreign_rules=[
        {"DisplayName": "Backup exemption", "IPsecRuleName": "backup", "Group": "Backup"},
    ])

    host = network.add_host(facts)

    assert host.write_count == 0
    assert [o.properties["Name"] for o in run(host, "Get-NetIPsecRule").output] == ["backup"]


def test_host_facts_via_cim(host):
    os_info = run(host, "Get-CimInstance", ClassName="Win32_OperatingSystem").output[0].properties
    system = run(host, "Get-CimInstance", "Win32_ComputerSystem").output[0].properties

    assert os_info["Caption"] == "Microsoft Windows Server 2019 Datacenter"
    assert os_info["Version"] == "10.0.17763"
    assert system["Domain"] == "corp.example"
    assert system["PartOfDomain"] is True
    assert system["Name"] == "SRV1"
