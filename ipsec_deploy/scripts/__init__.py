"""The fixed PowerShell scripts ipsec-deploy runs on hosts.

Their text never changes at run time: every variable input arrives as a
typed PSRP parameter, so no inventory value is ever spliced into code.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources


@dataclass(frozen=True)
class FixedScript:
    name: str
    text: str


@lru_cache(maxsize=None)
def load_script(name: str) -> FixedScript:
    """Return the shipped script ``<name>.ps1``."""
    text = resources.files(__package__).joinpath(f"{name}.ps1").read_text(encoding="utf-8")
    return FixedScript(name, text)


def read_state_script() -> FixedScript:
    return load_script("read_state")


def apply_changes_script() -> FixedScript:
    return load_script("apply_changes")


def read_security_associations_script() -> FixedScript:
    return load_script("read_security_associations")


def arm_restore_script() -> FixedScript:
    return load_script("arm_restore")


def disarm_restore_script() -> FixedScript:
    return load_script("disarm_restore")


def list_restores_script() -> FixedScript:
    return load_script("list_restores")


def probe_peers_script() -> FixedScript:
    return load_script("probe_peers")


def clear_security_associations_script() -> FixedScript:
    return load_script("clear_security_associations")
