"""A pair that verification cannot probe (a UDP policy) is raised with its hosts and reported as unverified."""

from __future__ import annotations

from tests.test_rollout_safety import INVENTORY, apply, security_of, start  # noqa: F401

UDP = INVENTORY.replace("    protocol: TCP\n    endpoint2_ports: [1433]\n", "    protocol: UDP\n    endpoint2_ports: [1434]\n")


def test_udp_pair_is_raised_unverified(start):
    assert "protocol: UDP" in UDP
    running, inventory, journal = start(UDP)
    first = apply(inventory, journal)
    assert "raised without verification: APP-SRV01: ipsec-deploy-rule-app-db-endpoint1" in first.stdout
    assert security_of(running, "DB-SRV01", "ipsec-deploy-rule-app-db-endpoint2") == ("Require", "Require")

    second = apply(inventory, journal)
    assert "No changes" in second.stdout
