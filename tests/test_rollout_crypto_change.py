"""An edited crypto profile is staged and verified with fresh SAs, then raised."""

from __future__ import annotations

import yaml

from tests.e2e_helpers import run_cli

from tests.test_rollout_safety import ADDRESSES, HOSTS, INVENTORY, apply, invariant_violations, security_of, start  # noqa: F401


def test_crypto_profile_change_reaches_require(start):
    running, inventory, journal = start(INVENTORY)
    assert apply(inventory, journal).exit_code == 0

    document = yaml.safe_load(inventory.read_text())
    document["crypto"]["strong"]["quick_mode"] = [{"encryption": "AES128", "integrity": "SHA256"}]
    inventory.write_text(yaml.safe_dump(document, sort_keys=False))

    result = apply(inventory, journal)
    assert result.exit_code == 0, result.stdout[-3000:]
    assert "stayed in Request" not in result.stdout
    for host in HOSTS:
        assert security_of(running, host, "ipsec-deploy-rule-server-vlan") == ("Require", "Require")
    assert "quick mode ESP AES128/SHA256" in result.stdout
    assert invariant_violations(running, ADDRESSES) == []


def test_crypto_change_diff_shows_proposals(start):
    # The dry run must show the old and new proposals, and no lifetime that Windows filled in.
    running, inventory, journal = start(INVENTORY)
    assert apply(inventory, journal).exit_code == 0
    document = yaml.safe_load(inventory.read_text())
    document["crypto"]["strong"]["main_mode"] = [{"encryption": "AES128", "hash": "SHA256", "key_exchange": "DH14"}]
    inventory.write_text(yaml.safe_dump(document, sort_keys=False))

    result = run_cli("apply", str(inventory), "--dry-run", "--journal-dir", str(journal))

    assert result.exit_code == 0, result.stdout + result.stderr
    assert "proposals: [encryption=AES256, hash=SHA256, key_exchange=DH14] -> [encryption=AES128, hash=SHA256, key_exchange=DH14]" in result.stdout
    assert "max_minutes" not in result.stdout
