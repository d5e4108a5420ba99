"""Loader checks: each invalid input is reported with its line and a message that gives the fix."""

from __future__ import annotations

import pytest

from ipsec_deploy.inventory import InventoryError, load_inventory, parse_inventory
from tests.inventory_texts import TWO_HOSTS, errors_of, problems_of


def line_containing(text: str, snippet: str, occurrence: int = 1) -> int:
    """Return the 1-based line of the n-th line that contains snippet."""
    seen = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if snippet in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{snippet!r} not in text")


def single_error(text: str) -> tuple[int, str]:
    errors = errors_of(text)
    assert len(errors) == 1, errors
    return errors[0]


def test_base_inventory_is_valid():
    assert errors_of(TWO_HOSTS) == []


def test_unknown_top_level_key_suggests_fix():
    text = TWO_HOSTS + "polices: []\n"
    line, message = single_error(text)
    assert line == line_containing(text, "polices:")
    assert "unknown key 'polices'" in message
    assert "did you mean 'policies'" in message


def test_unknown_host_key_suggests_fix():
    text = TWO_HOSTS.replace("    ip: [10.0.1.20]\n", "    ip: [10.0.1.20]\n    adress: db.corp.example\n")
    line, message = single_error(text)
    assert line == line_containing(text, "adress:")
    assert "host 'DB-SRV01'" in message
    assert "did you mean 'address'" in message


def test_literal_password_is_rejected_with_fix():
    text = "connection:\n  username: CORP\\svc\n  password: hunter2\n" + TWO_HOSTS
    line, message = single_error(text)
    assert line == 3
    assert "password_env" in message
    assert "prompted" in message
    assert "hunter2" not in message


def test_basic_auth_over_http_is_rejected():
    text = "connection:\n  transport: http\n  auth: basic\n" + TWO_HOSTS
    line, message = single_error(text)
    assert line == 3
    assert "Basic" in message
    assert "https" in message


def test_inherited_basic_auth_reported_once():
    text = "connection:\n  transport: http\n  auth: basic\n" + TWO_HOSTS
    text = text.replace("    domain: corp.example\n", "    domain: corp.example\n    connection: {port: 5985}\n")
    assert text.count("port: 5985") == 2
    line, message = single_error(text)
    assert line == 3
    assert "Basic" in message


def test_unknown_connection_key_hint_omits_password():
    text = "connection:\n  transport: https\n  pasword_env: X\n" + TWO_HOSTS
    line, message = single_error(text)
    assert line == 3
    assert "did you mean 'password_env'" in message
    allowed = message.split("allowed keys: ")[1].split(", ")
    assert "password_env" in allowed
    assert "password" not in allowed


def test_malformed_ip_address():
    text = TWO_HOSTS.replace("ip: [10.0.1.20]", "ip: [10.0.1.300]")
    line, message = single_error(text)
    assert line == line_containing(text, "10.0.1.300")
    assert "invalid IP address '10.0.1.300'" in message


def test_cidr_with_host_bits_suggests_network():
    text = TWO_HOSTS.replace("endpoint2: [DB-SRV01]", "endpoint2: [10.0.1.20/24]")
    line, message = single_error(text)
    assert line == line_containing(text, "10.0.1.20/24")
    assert "host bits set" in message
    assert "10.0.1.0/24" in message


def test_port_out_of_range():
    text = TWO_HOSTS.replace("    security: require\n", "    protocol: TCP\n    endpoint2_ports: [70000]\n    security: require\n")
    line, message = single_error(text)
    assert line == line_containing(text, "endpoint2_ports")
    assert "invalid port 70000" in message


def test_ports_need_tcp_or_udp():
    text = TWO_HOSTS.replace("    security: require\n", "    protocol: ICMPv4\n    endpoint2_ports: [1433]\n    security: require\n")
    line, message = single_error(text)
    assert line == line_containing(text, "endpoint2_ports")
    assert "TCP or UDP" in message


def test_unknown_protocol_suggests_fix():
    text = TWO_HOSTS.replace("    security: require\n", "    protocol: TPC\n    security: require\n")
    line, message = single_error(text)
    assert line == line_containing(text, "protocol: TPC")
    assert "did you mean 'TCP'" in message


def test_unknown_host_in_endpoint_suggests_fix():
    text = TWO_HOSTS.replace("endpoint2: [DB-SRV01]", "endpoint2: [DB-SRV1]")
    line, message = single_error(text)
    assert line == line_containing(text, "DB-SRV1]")
    assert "unknown host, group or network 'DB-SRV1'" in message
    assert "did you mean 'DB-SRV01'" in message


def test_unknown_group_member():
    text = TWO_HOSTS + "groups:\n  web: [APP-SRV01, WEB-SRV09]\n"
    line, message = single_error(text)
    assert line == line_containing(text, "WEB-SRV09")
    assert "unknown host or group 'WEB-SRV09' in group 'web'" in message


def test_group_cycle_is_reported():
    text = TWO_HOSTS + "groups:\n  a: [b]\n  b: [a]\n"
    messages = [message for _, message in errors_of(text)]
    assert any("contains itself" in m for m in messages)


def test_unknown_auth_and_crypto_profiles():
    text = TWO_HOSTS.replace("auth: kerberos\n    crypto: strong", "auth: kerberoz\n    crypto: strongest")
    errors = errors_of(text)
    assert (line_containing(text, "auth: kerberoz"), "unknown auth profile 'kerberoz' in policy 'app-db' (did you mean 'kerberos'?); define it under auth") in errors
    assert any(line == line_containing(text, "crypto: strongest") and "unknown crypto profile 'strongest'" in m for line, m in errors)


def test_duplicate_policy_names():
    policy = TWO_HOSTS[TWO_HOSTS.index("  - name: app-db") :]
    text = TWO_HOSTS + policy
    line, message = single_error(text)
    assert line == line_containing(text, "- name: app-db", occurrence=2)
    assert "duplicate policy or exemption name 'app-db'" in message


def test_duplicate_yaml_key():
    text = TWO_HOSTS.replace("  DB-SRV01:\n", "  APP-SRV01:\n")
    errors = errors_of(text)
    assert errors == [(line_containing(text, "APP-SRV01:", occurrence=2), "duplicate key 'APP-SRV01' (first defined on line 5)")]


def test_duplicate_host_ip():
    text = TWO_HOSTS.replace("ip: [10.0.1.20]", "ip: [10.0.1.10]")
    errors = errors_of(text)
    assert any("already used by host 'APP-SRV01'" in m for _, m in errors)


def test_duplicate_winrm_endpoint():
    text = TWO_HOSTS.replace("  APP-SRV01:\n", "  APP-SRV01:\n    address: srv.corp.example\n").replace(
        "  DB-SRV01:\n", "  DB-SRV01:\n    address: SRV.corp.example\n    connection: {transport: https}\n"
    )
    line, message = single_error(text)
    assert line == line_containing(text, "DB-SRV01:")
    assert "host 'DB-SRV01' has the same WinRM endpoint as host 'APP-SRV01' (SRV.corp.example port 5986)" in message
    assert "correct its address or connection port" in message


def test_duplicate_endpoint_in_other_spelling():
    text = TWO_HOSTS.replace("  APP-SRV01:\n", "  APP-SRV01:\n    address: '::1'\n").replace(
        "  DB-SRV01:\n", "  DB-SRV01:\n    address: '0:0:0:0:0:0:0:1'\n"
    )
    line, message = single_error(text)
    assert line == line_containing(text, "DB-SRV01:")
    assert "has the same WinRM endpoint as host 'APP-SRV01'" in message


def test_all_digit_computer_name_rejected():
    text = TWO_HOSTS.replace("  DB-SRV01:\n", "  DB-SRV01:\n    computer_name: '12345'\n")
    line, message = single_error(text)
    assert "invalid computer_name '12345'" in message
    assert "not only digits" in message


def test_ip_named_host_warns_without_computer_name():
    text = TWO_HOSTS.replace("  DB-SRV01:\n", "  10.0.1.20:\n").replace("endpoint2: [DB-SRV01]", "endpoint2: [10.0.1.20]")
    warnings = [(line, message) for line, severity, message in problems_of(text) if severity == "warning"]
    assert (line_containing(text, "  10.0.1.20:"), "host '10.0.1.20' is named by an IP address, so ipsec-deploy cannot "
            "check that its session reaches the right computer; set computer_name to its Windows computer name") in warnings

    named = text.replace("  10.0.1.20:\n", "  10.0.1.20:\n    computer_name: DB-SRV01\n")
    assert not [m for _, severity, m in problems_of(named) if "named by an IP address" in m]


def test_same_address_other_port_allowed():
    text = TWO_HOSTS.replace("  APP-SRV01:\n", "  APP-SRV01:\n    address: 127.0.0.1\n    connection: {port: 15985}\n").replace(
        "  DB-SRV01:\n", "  DB-SRV01:\n    address: 127.0.0.1\n    connection: {port: 15986}\n"
    )
    assert errors_of(text) == []


def test_computer_name_is_read():
    text = TWO_HOSTS.replace("  DB-SRV01:\n", "  DB-SRV01:\n    computer_name: SQLNODE7\n")
    assert parse_inventory(text).hosts["DB-SRV01"].computer_name == "SQLNODE7"
    assert parse_inventory(TWO_HOSTS).hosts["APP-SRV01"].computer_name is None


def test_invalid_computer_name():
    text = TWO_HOSTS.replace("  DB-SRV01:\n", "  DB-SRV01:\n    computer_name: sql.node.corp.example\n")
    line, message = single_error(text)
    assert line == line_containing(text, "computer_name:")
    assert "invalid computer_name 'sql.node.corp.example' in host 'DB-SRV01'" in message


def test_host_and_network_name_clash():
    text = TWO_HOSTS.replace("  domain-controllers: [10.0.0.10, 10.0.0.11]", "  domain-controllers: [10.0.0.10, 10.0.0.11]\n  DB-SRV01: [10.9.0.0/16]")
    errors = errors_of(text)
    assert any(line == line_containing(text, "DB-SRV01: [10.9") and "both a host and a network" in m for line, m in errors)


def test_invalid_yaml_reports_line():
    text = TWO_HOSTS.replace("    ip: [10.0.1.20]", "    ip: [10.0.1.20")
    errors = errors_of(text)
    assert len(errors) == 1
    assert errors[0][1].startswith("invalid YAML")
    assert errors[0][0] >= line_containing(text, "ip: [10.0.1.20")


def test_invalid_enum_value_suggests_fix():
    text = TWO_HOSTS.replace("encryption: AES256, hash", "encryption: AES-256, hash")
    line, message = single_error(text)
    assert line == line_containing(text, "AES-256")
    assert "invalid encryption 'AES-256'" in message
    assert "did you mean 'AES256'" in message


def test_weak_algorithm_rejected_without_opt_in():
    text = TWO_HOSTS.replace("integrity: SHA256", "integrity: SHA1")
    line, message = single_error(text)
    assert line == line_containing(text, "SHA1")
    assert "weak algorithm SHA1" in message
    assert "allow_weak_crypto: true" in message


def test_weak_algorithm_allowed_with_warning():
    text = "allow_weak_crypto: true\n" + TWO_HOSTS.replace("key_exchange: DH14", "key_exchange: DH2")
    problems = problems_of(text)
    assert [p for p in problems if p[1] == "error"] == []
    assert any(severity == "warning" and "weak algorithm DH2" in message for _, severity, message in problems)


PSK_PROFILE = "  lab-psk:\n    phase1: [{method: pre_shared_key, key_env: LAB_PSK}]\n"


def test_pre_shared_key_rejected_without_opt_in():
    text = TWO_HOSTS.replace("auth:\n", "auth:\n" + PSK_PROFILE).replace("auth: kerberos\n    crypto", "auth: lab-psk\n    crypto")
    line, message = single_error(text)
    assert line == line_containing(text, "pre_shared_key")
    assert "test labs only" in message
    assert "allow_pre_shared_keys: true" in message


def test_pre_shared_key_opt_in_warns():
    text = "allow_pre_shared_keys: true\n" + TWO_HOSTS.replace("auth:\n", "auth:\n" + PSK_PROFILE).replace(
        "auth: kerberos\n    crypto", "auth: lab-psk\n    crypto"
    )
    problems = problems_of(text)
    assert [p for p in problems if p[1] == "error"] == []
    warnings = [(line, message) for line, severity, message in problems if severity == "warning"]
    assert any(line == line_containing(text, "lab-psk:") and "pre-shared key" in m and "test labs only" in m for line, m in warnings)


def test_certificate_needs_authority():
    text = TWO_HOSTS.replace("phase1: [{method: kerberos}]", "phase1: [{method: certificate}]")
    errors = errors_of(text)
    assert any(line == line_containing(text, "method: certificate") and "needs 'authority'" in m for line, m in errors)


def test_every_problem_reported_at_once():
    text = TWO_HOSTS.replace("ip: [10.0.1.20]", "ip: [10.0.1.300]").replace("integrity: SHA256", "integrity: MD5") + "polices: []\n"
    with pytest.raises(InventoryError) as raised:
        parse_inventory(text, "inv.yaml")
    messages = " | ".join(p.message for p in raised.value.problems)
    assert "10.0.1.300" in messages
    assert "weak algorithm MD5" in messages
    assert "unknown key 'polices'" in messages


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(InventoryError) as raised:
        load_inventory(tmp_path / "absent.yaml")
    assert raised.value.problems[0].message == "inventory file not found"


def test_host_connection_overrides_defaults():
    text = "connection:\n  transport: https\n  username: CORP\\svc\n" + TWO_HOSTS.replace(
        "    ip: [10.0.1.20]\n", "    ip: [10.0.1.20]\n    connection:\n      transport: http\n      port: 15985\n"
    )
    inventory = parse_inventory(text, "inv.yaml")
    db = inventory.hosts["DB-SRV01"].connection
    app = inventory.hosts["APP-SRV01"].connection
    assert (db.transport, db.effective_port, db.username) == ("http", 15985, "CORP\\svc")
    assert (app.transport, app.effective_port, app.cert_validation) == ("https", 5986, True)


def test_unsupported_security_combination():
    text = TWO_HOSTS.replace("    security: require\n", "    inbound_security: Request\n    outbound_security: Require\n")
    line, message = single_error(text)
    assert line == line_containing(text, "- name: app-db")
    assert "inbound Request with outbound Require is not a combination Windows supports" in message


def test_empty_proposal_lists_rejected():
    text = TWO_HOSTS.replace("phase1: [{method: kerberos}]", "phase1: []")
    errors = errors_of(text)
    assert any(line == line_containing(text, "phase1: []") and "is empty" in m for line, m in errors)


def test_inherited_certificate_auth_over_http():
    text = "connection:\n  auth: certificate\n  client_certificate: c.pem\n  client_key: k.pem\n" + TWO_HOSTS.replace(
        "    ip: [10.0.1.20]\n", "    ip: [10.0.1.20]\n    connection:\n      transport: http\n"
    )
    line, message = single_error(text)
    assert line == line_containing(text, "transport: http")
    assert "works only over https" in message


def test_empty_hosts_section():
    text = TWO_HOSTS.replace("hosts:\n  APP-SRV01:", "hosts: {}\nold_hosts:\n  APP-SRV01:")
    messages = [m for _, m in errors_of(text)]
    assert "the 'hosts' section is empty; add at least one host" in messages


def test_invalid_policy_store():
    text = "policy_store: MyStore\n" + TWO_HOSTS
    line, message = single_error(text)
    assert line == 1
    assert "invalid policy_store 'MyStore'" in message


def test_gpo_policy_store_accepted():
    assert errors_of("policy_store: corp.example\\IPsec servers\n" + TWO_HOSTS) == []


def test_gpo_policy_store_warns_apply_refuses():
    problems = problems_of("policy_store: corp.example\\IPsec servers\n" + TWO_HOSTS)
    warnings = [message for line, severity, message in problems if severity == "warning" and line == 1]
    assert len(warnings) == 1
    assert "is a domain GPO, which every host it applies to shares" in warnings[0]
    assert "'apply' and 'revert' refuse it" in warnings[0]


def test_exemption_override_rejected():
    text = TWO_HOSTS.replace("    ip: [10.0.1.20]\n", "    ip: [10.0.1.20]\n    policy_overrides:\n      domain-controllers: {security: request}\n")
    line, message = single_error(text)
    assert line == line_containing(text, "domain-controllers: {security")
    assert "overrides exemption 'domain-controllers'" in message


def test_ca_bundle_relative_to_inventory(tmp_path, monkeypatch):
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "corp-ca.pem").write_text("not read by the loader", encoding="utf-8")
    inventory = folder / "inventory.yaml"
    inventory.write_text("connection:\n  ca_bundle: corp-ca.pem\n" + TWO_HOSTS, encoding="utf-8")
    monkeypatch.chdir(tmp_path)

    loaded = load_inventory(inventory.relative_to(tmp_path))

    assert loaded.hosts["APP-SRV01"].connection.ca_bundle == str(folder / "corp-ca.pem")


def test_cert_validation_off_warns():
    text = "connection:\n  cert_validation: false\n" + TWO_HOSTS
    warnings = [(line, message) for line, severity, message in problems_of(text) if severity == "warning"]
    assert (2, "cert_validation is off in connection: anyone on the network path can pose as the host and read the "
               "session; set ca_bundle instead") in warnings


def test_weak_pfs_group_named():
    text = TWO_HOSTS.replace("    pfs_group: DH14\n", "    pfs_group: DH2\n")
    line, message = single_error(text)
    assert line == line_containing(text, "pfs_group: DH2")
    assert message.startswith("weak algorithm DH2 in pfs_group of crypto profile 'strong':")


def test_unusable_ca_bundle_path_is_an_error():
    text = "connection:\n  ca_bundle: '~nosuchuser-ipsec-deploy/ca.pem'\n" + TWO_HOSTS
    line, message = single_error(text)
    assert line == 2
    assert message.startswith("ca_bundle '~nosuchuser-ipsec-deploy/ca.pem' of connection cannot be used: ")
    assert message.endswith("; give the path of a PEM file")
