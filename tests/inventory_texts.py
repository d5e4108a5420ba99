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
