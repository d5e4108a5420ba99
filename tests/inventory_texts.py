"""Inventory YAML texts shared by the loader, planner and CLI tests."""

from __future__ import annotations

from ipsec_deploy.inventory import InventoryError, parse_inventory
from ipsec_deploy.planner import build_plan

# Two domain members that require encryption between them (Kerberos,
# AES256/SHA256/DH14, ESP AES256/SHA256, PFS DH14), with the domain
# controllers exempt. Line numbers matter to the tests that use it.
TWO_HOSTS = """\
forests:
  corp.example:
    domain_controllers: [10.0.0.10, 10.0.0.11]
hosts:
  APP-SRV01:
    ip: [10.0.1.10]
    domain: corp.example
  DB-SRV01:
    ip: [10.0.1.20]
    domain: corp.example
networks:
  domain-controllers: [10.0.0.10, 10.0.0.11]
auth:
  kerberos:
    phase1: [{method: kerberos}]
crypto:
  strong:
    main_mode: [{encryption: AES256, hash: SHA256, key_exchange: DH14}]
    quick_mode: [{encapsulation: ESP, encryption: AES256, integrity: SHA256}]
    pfs_group: DH14
exemptions:
  - name: domain-controllers
    endpoint1: any
    endpoint2: [domain-controllers]
policies:
  - name: app-db
    endpoint1: [APP-SRV01]
    endpoint2: [DB-SRV01]
    security: require
    auth: kerberos
    crypto: strong
"""


def problems_of(text: str) -> list[tuple[int, str, str]]:
    """Return (line, severity, message) of every problem in an inventory, planning it too."""
    try:
        plan = build_plan(parse_inventory(text, "inv.yaml"))
    except InventoryError as error:
        return [(p.location.line, p.severity, p.message) for p in error.problems]
    return [(p.location.line, p.severity, p.message) for p in plan.warnings]


def errors_of(text: str) -> list[tuple[int, str]]:
    return [(line, message) for line, severity, message in problems_of(text) if severity == "error"]


def plan_of(text: str):
    return build_plan(parse_inventory(text, "inv.yaml"))


def lab_inventory(hosts: list[tuple[str, str]], endpoint1: str, endpoint2: str, policy: str = "app-db") -> str:
    """Return an inventory of lab hosts that one Kerberos policy with the 'strong' crypto profile joins.

    ``hosts`` are (name, data-plane address) pairs, on 127.0.0.1 from port
    15985 up; the lab_factory fixture replaces the ports with free ones.
    ``endpoint1`` and ``endpoint2`` are YAML lists, such as "[APP-SRV01]".
    """
    host_lines = "".join(
        f"  {name}: {{address: 127.0.0.1, connection: {{port: {15985 + index}}}, ip: [{address}], domain: corp.example}}\n"
        for index, (name, address) in enumerate(hosts)
    )
    return (
        "connection:\n  transport: http\n  auth: negotiate\n  username: CORP\\ipsec-admin\n"
        "forests:\n  corp.example: {}\n"
        f"hosts:\n{host_lines}"
        "auth:\n  kerberos: {phase1: [kerberos]}\n"
        "crypto:\n  strong:\n"
        "    main_mode: [{encryption: AES256, hash: SHA256, key_exchange: DH14}]\n"
        "    quick_mode: [{encryption: AES256, integrity: SHA256}]\n"
        f"policies:\n  - name: {policy}\n    endpoint1: {endpoint1}\n    endpoint2: {endpoint2}\n"
        "    auth: kerberos\n    crypto: strong\n"
        "lab:\n  password: Lab-Passw0rd\n"
    )
