"""Verification logic without hosts: probes from the plan, and each pair status from SA records."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipsec_deploy.inventory import load_inventory
from ipsec_deploy.planner import build_plan
from ipsec_deploy.verify.classify import CLEAR, DIFFERENT, ENCRYPTED, EXEMPT, FAILING, NOT_EXEMPT, ONE_SIDED, SKIPPED, classify, parse_sas
from ipsec_deploy.verify.expectations import DEFAULT_PROBE_PORT, plan_probes
from ipsec_deploy.verify.run import failure_reason

EXAMPLE = Path(__file__).resolve().parent.parent / "inventory" / "example.yaml"


@pytest.fixture(scope="module")
def probes():
    return {(p.policy, p.initiator, p.responder): p for p in plan_probes(build_plan(load_inventory(EXAMPLE)))}


def main_mode_record(local, remote, cipher="65003", hash_="65001", group="14", auth="2"):
    return {"Kind": "main_mode_sa", "LocalEndpoint": local, "RemoteEndpoint": remote, "AuthenticationMethod": auth, "CipherAlgorithm": cipher, "HashAlgorithm": hash_, "GroupId": group}


def quick_mode_record(local, remote, cipher="65003", integrity="65001", pfs="14", protocol="0"):
    return {
        "Kind": "quick_mode_sa",
        "LocalEndpoint": local,
        "RemoteEndpoint": remote,
        "IpProtocol": protocol,
        "RemotePort": "0",
        "FirstTransformType": "4",
        "FirstCipherAlgorithm": cipher,
        "FirstIntegrityAlgorithm": integrity,
        "PfsGroupId": pfs,
    }


def sas_for(local, remote, **overrides):
    qm_keys = {"integrity", "pfs", "protocol"}
    mm = {k: v for k, v in overrides.items() if k not in qm_keys}
    qm = {k: v for k, v in overrides.items() if k in qm_keys or k == "cipher"}
    return parse_sas([main_mode_record(local, remote, **mm), quick_mode_record(local, remote, **qm)])


def test_probe_uses_database_port(probes):
    probe = probes[("reports-sql", "REPORT-SRV01", "DB-SRV01")]
    assert (probe.protocol, probe.port) == ("TCP", 1433)
    assert (probe.initiator_address, probe.responder_address) == ("10.0.1.30", "10.0.1.20")


def test_probe_defaults_to_smb_port(probes):
    probe = probes[("app-db", "APP-SRV01", "DB-SRV01")]
    assert probe.port == DEFAULT_PROBE_PORT
    assert probe.expected.auth_methods[0].method == "kerberos"
    assert probe.expected.pfs_group == "DH14"


def test_icmp_exemption_probe_is_ping(probes):
    probe = probes[("icmp-in-vlan", "APP-SRV01", "DB-SRV01")]
    assert probe.exemption
    assert (probe.protocol, probe.port) == ("ICMPv4", None)


def test_matching_sas_are_encrypted(probes):
    probe = probes[("app-db", "APP-SRV01", "DB-SRV01")]
    result = classify(probe, sas_for("10.0.1.10", "10.0.1.20"), sas_for("10.0.1.20", "10.0.1.10"), True)
    assert result.status == ENCRYPTED
    assert "kerberos" in result.negotiated
    assert "AES256/SHA256/DH14" in result.negotiated


def test_other_cipher_is_different(probes):
    probe = probes[("app-db", "APP-SRV01", "DB-SRV01")]
    result = classify(probe, sas_for("10.0.1.10", "10.0.1.20", cipher="65001"), sas_for("10.0.1.20", "10.0.1.10", cipher="65001"), True)
    assert result.status == DIFFERENT
    assert "AES128" in result.reason


def test_old_sa_beside_planned_one_is_encrypted(probes):
    # After a crypto change the old SAs live on until they expire, next to the new ones.
    probe = probes[("app-db", "APP-SRV01", "DB-SRV01")]
    old_and_new = parse_sas([
        main_mode_record("10.0.1.10", "10.0.1.20", cipher="65001"), quick_mode_record("10.0.1.10", "10.0.1.20", cipher="65001"),
        main_mode_record("10.0.1.10", "10.0.1.20"), quick_mode_record("10.0.1.10", "10.0.1.20"),
    ])
    result = classify(probe, old_and_new, sas_for("10.0.1.20", "10.0.1.10"), True)
    assert result.status == ENCRYPTED
    assert "AES256/SHA256/DH14" in result.negotiated


def test_certificate_where_kerberos_planned_is_different(probes):
    probe = probes[("app-db", "APP-SRV01", "DB-SRV01")]
    result = classify(probe, sas_for("10.0.1.10", "10.0.1.20", auth="1"), sas_for("10.0.1.20", "10.0.1.10", auth="1"), True)
    assert result.status == DIFFERENT
    assert "authenticated with certificate, planned kerberos" in result.reason


def test_sas_on_one_host_are_one_sided(probes):
    probe = probes[("app-db", "APP-SRV01", "DB-SRV01")]
    result = classify(probe, sas_for("10.0.1.10", "10.0.1.20"), parse_sas([]), False)
    assert result.status == ONE_SIDED
    assert "only APP-SRV01" in result.reason


def test_no_sas_and_connection_ok_is_clear(probes):
    probe = probes[("app-db", "APP-SRV01", "DB-SRV01")]
    assert classify(probe, parse_sas([]), parse_sas([]), True).status == CLEAR


def test_no_sas_and_connection_failed_is_failing(probes):
    probe = probes[("app-db", "APP-SRV01", "DB-SRV01")]
    assert classify(probe, parse_sas([]), parse_sas([]), False).status == FAILING


def test_exemption_without_sa_passes(probes):
    probe = probes[("icmp-in-vlan", "APP-SRV01", "DB-SRV01")]
    assert classify(probe, parse_sas([]), parse_sas([]), True).status == EXEMPT


def test_exemption_with_icmp_sa_fails(probes):
    probe = probes[("icmp-in-vlan", "APP-SRV01", "DB-SRV01")]
    result = classify(probe, sas_for("10.0.1.10", "10.0.1.20", protocol="1"), parse_sas([]), True)
    assert result.status == NOT_EXEMPT


def test_sas_of_other_peer_do_not_count(probes):
    probe = probes[("app-db", "APP-SRV01", "DB-SRV01")]
    result = classify(probe, sas_for("10.0.1.10", "10.0.1.30"), sas_for("10.0.1.20", "10.0.1.30"), False)
    assert result.status == FAILING


def test_udp_only_policy_is_not_verified(tmp_path):
    text = EXAMPLE.read_text().replace("    protocol: TCP\n    endpoint2_ports: [1433]", "    protocol: UDP\n    endpoint2_ports: [1434]")
    path = tmp_path / "udp.yaml"
    path.write_text(text)
    found = [p for p in plan_probes(build_plan(load_inventory(path))) if p.policy == "reports-sql"]
    result = classify(found[0], parse_sas([]), parse_sas([]), None)
    assert result.status == SKIPPED
    assert "UDP" in result.reason


def test_failure_reason_line_is_extracted():
    message = "IPsec Main Mode negotiation failed.\n\nFailure Information:\n\tFailure Point:\tRemote computer\n\tFailure Reason:\tNo policy configured\n"
    assert failure_reason(message) == "No policy configured"
    assert failure_reason("Something else happened") == "Something else happened"
