"""A pre-shared key deployment converges: the key's variable name is taken from the plan, as hosts never return the key."""
from __future__ import annotations

from tests.test_rollout_safety import INVENTORY, apply, start  # noqa: F401

PSK_INVENTORY = ("allow_pre_shared_keys: true\n" + INVENTORY).replace(
    "auth:\n  kerberos:\n    phase1: [kerberos]\n",
    "auth:\n  kerberos:\n    phase1: [{method: pre_shared_key, key_env: LAB_PSK}]\n",
)


def test_psk(start, monkeypatch):
    assert "pre_shared_key" in PSK_INVENTORY
    monkeypatch.setenv("LAB_PSK", "lab-only-key")
    running, inventory, journal = start(PSK_INVENTORY)
    first = apply(inventory, journal)
    print("first apply exit:", first.exit_code)
    print("\n".join(l for l in first.stdout.splitlines() if "SRV01" in l and ("failed" in l or "changed" in l)))
    second = apply(inventory, journal)
    print("second apply exit:", second.exit_code)
    print("\n".join(l for l in second.stdout.splitlines() if "p1auth" in l or "restore task" in l or "No changes" in l))
    assert "No changes" in second.stdout
