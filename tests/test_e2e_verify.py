"""verify end to end: real probes, SAs and events read from lab hosts over HTTP, judged against the plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e_helpers import EXAMPLE_LAB, PASSWORD_VARIABLE, query_host, run_cli, with_password_env

PASSWORD = "Lab-Passw0rd"


@pytest.fixture
def start(lab_factory, monkeypatch, tmp_path):
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)

    def start_with(text: str | None = None):
        running, inventory = lab_factory(text if text is not None else EXAMPLE_LAB.read_text(encoding="utf-8"))
        return running, with_password_env(inventory), tmp_path / "journal"

    return start_with


def apply(inventory: Path, journal: Path, *extra: str):
    return run_cli("apply", str(inventory), "--yes", "--journal-dir", str(journal), "--verify-timeout", "0.5", *extra)


def verify(inventory: Path) -> tuple[int, dict]:
    result = run_cli("verify", str(inventory), "--format", "json", "--verify-timeout", "0.5")
    return result.exit_code, json.loads(result.stdout)


def pair(report: dict, policy: str, initiator: str, responder: str) -> dict:
    for entry in report["pairs"]:
        if (entry["policy"], entry["initiator"]["host"], entry["responder"]["host"]) == (policy, initiator, responder):
            return entry
    raise AssertionError(f"no pair {policy} {initiator} -> {responder}")


def test_verify_after_apply_all_encrypted(start):
    running, inventory, journal = start()
    assert apply(inventory, journal, "--no-verify").exit_code == 0
    code, report = verify(inventory)
    assert code == 0
    assert report["passed"] is True

    app_db = pair(report, "app-db", "APP-SRV01", "DB-SRV01")
    assert app_db["status"] == "encrypted"
    assert app_db["negotiated"].startswith("kerberos; main mode AES256/SHA256/DH14")
    assert "ESP AES256/SHA256, PFS DH14" in app_db["negotiated"]
    partner = pair(report, "vlan-partner", "APP-SRV01", "PARTNER-APP01")
    assert partner["negotiated"].startswith("certificate;")
    assert pair(report, "icmp-in-vlan", "APP-SRV01", "DB-SRV01")["status"] == "exempt"


def test_verify_before_apply_fails(start):
    running, inventory, journal = start()
    code, report = verify(inventory)
    assert code == 1
    assert report["passed"] is False
    entry = pair(report, "app-db", "APP-SRV01", "DB-SRV01")
    assert entry["status"] == "rule missing"
    assert "APP-SRV01 lacks rule 'ipsec-deploy-rule-app-db-endpoint1'" in entry["reason"]
    assert any("exemption 'ipsec-deploy-rule-icmp-in-vlan' is missing" in f for f in report["exemption_findings"])


def test_rule_removed_behind_back_fails_with_reason(start):
    running, inventory, journal = start()
    assert apply(inventory, journal, "--no-verify").exit_code == 0
    for rule in ("ipsec-deploy-rule-app-db-endpoint2", "ipsec-deploy-rule-server-vlan"):
        query_host(inventory, "DB-SRV01", PASSWORD, "Remove-NetIPsecRule", {"IPsecRuleName": rule})

    code, report = verify(inventory)
    assert code == 1
    entry = pair(report, "app-db", "APP-SRV01", "DB-SRV01")
    assert entry["status"] == "rule missing"
    assert "DB-SRV01 lacks rule 'ipsec-deploy-rule-app-db-endpoint2'" in entry["reason"]
    # The VLAN pair has lost its rule on DB-SRV01 too, and its failing
    # negotiation shows in the events.
    assert pair(report, "server-vlan", "APP-SRV01", "DB-SRV01")["status"] == "rule missing"


def test_rules_left_in_request_differ(start):
    # Both hosts hold the pair's rules in Request, as a staged apply that
    # could not raise them leaves them: traffic is encrypted, but not required.
    running, inventory, journal = start()
    assert apply(inventory, journal, "--no-verify").exit_code == 0
    for host, rule in (("APP-SRV01", "ipsec-deploy-rule-app-db-endpoint1"), ("DB-SRV01", "ipsec-deploy-rule-app-db-endpoint2")):
        query_host(inventory, host, PASSWORD, "Set-NetIPsecRule", {"IPsecRuleName": rule, "InboundSecurity": "Request", "OutboundSecurity": "Request"})

    code, report = verify(inventory)

    assert code == 1
    entry = pair(report, "app-db", "APP-SRV01", "DB-SRV01")
    assert entry["status"] == "rule differs"
    assert "APP-SRV01 holds rule 'ipsec-deploy-rule-app-db-endpoint1' with Request inbound and Request outbound where the plan has Require and Require" in entry["reason"]
    assert pair(report, "server-vlan", "APP-SRV01", "DB-SRV01")["status"] == "encrypted"


def test_stale_sas_do_not_pass_after_revert(start):
    running, inventory, journal = start()
    assert apply(inventory, journal, "--no-verify").exit_code == 0
    assert verify(inventory)[0] == 0
    assert run_cli("revert", str(inventory), "--yes", "--journal-dir", str(journal)).exit_code == 0

    # The SAs from before the revert are still there, as on Windows until
    # their lifetime ends, but the rules are gone.
    code, report = verify(inventory)
    assert code == 1
    assert pair(report, "app-db", "APP-SRV01", "DB-SRV01")["status"] == "rule missing"


def test_probe_events_explain_failure(start):
    running, inventory, journal = start()
    assert apply(inventory, journal, "--no-verify").exit_code == 0
    # DB-SRV01 keeps its rules but stops its IKE service, so negotiation fails.
    with running.network.transaction():
        running.network.host("DB-SRV01").facts.ikeext_running = False
    code, report = verify(inventory)
    assert code == 1
    entry = pair(report, "app-db", "APP-SRV01", "DB-SRV01")
    assert entry["status"] == "negotiation failing"
    assert entry["events"], entry


def test_mismatched_crypto_on_one_side(start):
    running, inventory, journal = start()
    assert apply(inventory, journal, "--no-verify").exit_code == 0

    # Change DB-SRV01's quick mode set directly on the lab host, as an
    # admin with a console would.
    with running.network.transaction():
        host = running.network.host("DB-SRV01")
        proposal = host.invoke_checked("New-NetIPsecQuickModeCryptoProposal", {"Encapsulation": "ESP", "Encryption": "AES128", "ESPHash": "SHA1"})
        host.invoke_checked("Set-NetIPsecQuickModeCryptoSet", {"Name": "ipsec-deploy-qmcrypto-strong", "Proposal": proposal})

    code, report = verify(inventory)
    assert code == 1
    entry = pair(report, "app-db", "APP-SRV01", "DB-SRV01")
    assert entry["status"] in ("negotiation failing", "different algorithms")
    assert entry["status"] != "encrypted"
    assert entry["events"] or "AES128" in entry["reason"]


def test_renegotiate_sees_changed_crypto(start):
    running, inventory, journal = start()
    # The apply's own verification leaves SAs with the planned algorithms.
    assert apply(inventory, journal).exit_code == 0

    # Both hosts get AES128 directly on the lab host, as an admin with a
    # console would do; their rules still match each other.
    with running.network.transaction():
        for name in ("APP-SRV01", "DB-SRV01"):
            host = running.network.host(name)
            proposal = host.invoke_checked("New-NetIPsecQuickModeCryptoProposal", {"Encapsulation": "ESP", "Encryption": "AES128", "ESPHash": "SHA256"})
            host.invoke_checked("Set-NetIPsecQuickModeCryptoSet", {"Name": "ipsec-deploy-qmcrypto-strong", "Proposal": proposal})

    plain = run_cli("verify", str(inventory), "--format", "json", "--verify-timeout", "0.5")
    renegotiated = run_cli("verify", str(inventory), "--format", "json", "--verify-timeout", "0.5", "--renegotiate")

    # Without --renegotiate the SA negotiated before the change still counts.
    assert pair(json.loads(plain.stdout), "app-db", "APP-SRV01", "DB-SRV01")["status"] == "encrypted"
    assert renegotiated.exit_code == 1
    entry = pair(json.loads(renegotiated.stdout), "app-db", "APP-SRV01", "DB-SRV01")
    assert entry["status"] == "different algorithms"
    assert "AES128" in entry["negotiated"]


def test_kerberos_host_outside_forest(start):
    text = EXAMPLE_LAB.read_text(encoding="utf-8")
    head, lab_section = text.split("\nlab:", 1)
    lab_section = lab_section.replace("    DB-SRV01:\n", "    DB-SRV01:\n      domain: other.example\n      forest: other.example\n", 1)
    running, inventory, journal = start(head + "\nlab:" + lab_section)
    assert apply(inventory, journal, "--no-verify").exit_code == 0

    code, report = verify(inventory)
    assert code == 1
    entry = pair(report, "app-db", "APP-SRV01", "DB-SRV01")
    assert entry["status"] == "negotiation failing"
    assert entry["events"]
    # The certificate pair of the same host still works.
    assert pair(report, "vlan-partner", "DB-SRV01", "PARTNER-APP01")["status"] == "encrypted"


def test_certificate_from_other_ca(start):
    text = EXAMPLE_LAB.read_text(encoding="utf-8")
    head, lab_section = text.split("\nlab:", 1)
    partner_start = lab_section.index("    PARTNER-APP01:")
    partner_block = lab_section[partner_start:]
    assert "Corp Issuing CA 01" in partner_block
    lab_section = lab_section[:partner_start] + partner_block.replace("CN=Corp Issuing CA 01, O=Corp, C=US", "CN=Partner Issuing CA, O=Partner, C=DE", 1)
    running, inventory, journal = start(head + "\nlab:" + lab_section)
    assert apply(inventory, journal, "--no-verify").exit_code == 0

    code, report = verify(inventory)
    assert code == 1
    entry = pair(report, "vlan-partner", "APP-SRV01", "PARTNER-APP01")
    assert entry["status"] == "negotiation failing"
    assert entry["events"]
    assert pair(report, "app-db", "APP-SRV01", "DB-SRV01")["status"] == "encrypted"


def test_apply_exit_code_follows_verification(start):
    text = EXAMPLE_LAB.read_text(encoding="utf-8")
    head, lab_section = text.split("\nlab:", 1)
    lab_section = lab_section.replace("    DB-SRV01:\n", "    DB-SRV01:\n      forest: other.example\n", 1)
    running, inventory, journal = start(head + "\nlab:" + lab_section)

    result = apply(inventory, journal)
    assert result.exit_code == 1
    assert "Verification" in result.stdout
    assert "negotiation failing" in result.stdout


def test_no_verify_skips_verification(start):
    text = EXAMPLE_LAB.read_text(encoding="utf-8")
    head, lab_section = text.split("\nlab:", 1)
    lab_section = lab_section.replace("    DB-SRV01:\n", "    DB-SRV01:\n      forest: other.example\n", 1)
    running, inventory, journal = start(head + "\nlab:" + lab_section)

    result = apply(inventory, journal, "--no-verify")
    assert result.exit_code == 0
    assert "Verification" not in result.stdout

