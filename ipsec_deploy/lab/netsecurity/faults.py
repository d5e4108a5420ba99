"""Cmdlet failures a test injects into one simulated host.

These are faults of the emulated NetSecurity provider (a cmdlet that fails
for one object, or on its Nth call), not of the WinRM transport.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ipsec_deploy.lab.netsecurity.binding import wildcard_match
from ipsec_deploy.lab.netsecurity.errors import CmdletError, error_record, CIM_EXCEPTION


@dataclass(frozen=True)
class CmdletFault:
    """Make ``cmdlet`` fail with ``message``.

    ``object_name`` limits the fault to calls that address that object (its
    Name or DisplayName, wildcards allowed); ``call_number`` limits it to the
    Nth call of the cmdlet on this host (1-based, counted over the lab's whole
    life, including calls from other processes).
    """

    cmdlet: str
    message: str
    object_name: str | None = None
    call_number: int | None = None
    category: str = "NotSpecified"
    # NOTE: Windows reports provider failures as "Windows System Error
    # <code>,<cmdlet>"; 1359 (ERROR_INTERNAL_ERROR) is a stand-in code.
    error_id: str = "Windows System Error 1359"

    def applies(self, cmdlet: str, call_number: int, object_names: list[str]) -> bool:
        if self.cmdlet.lower() != cmdlet.lower():
            return False
        if self.call_number is not None and self.call_number != call_number:
            return False
        if self.object_name is not None:
            return any(wildcard_match(self.object_name, name) for name in object_names if name)
        return True

    def to_error(self, cmdlet: str, target: str) -> CmdletError:
        return CmdletError(
            error_record(self.message, self.error_id, self.category, cmdlet,
                         exception_type=CIM_EXCEPTION, target_name=target)
        )


def normalize_faults(raw: Any) -> list[CmdletFault]:
    """Accept a list of CmdletFault, or a mapping cmdlet -> message or CmdletFault."""
    if not raw:
        return []
    if isinstance(raw, dict):
        faults = []
        for cmdlet, value in raw.items():
            if isinstance(value, CmdletFault):
                faults.append(value)
            elif isinstance(value, dict):
                faults.append(CmdletFault(cmdlet=cmdlet, **value))
            else:
                faults.append(CmdletFault(cmdlet=cmdlet, message=str(value)))
        return faults
    return [f if isinstance(f, CmdletFault) else CmdletFault(**f) for f in raw]


def find_fault(faults: list[CmdletFault], cmdlet: str, call_number: int, object_names: list[str]) -> CmdletFault | None:
    for fault in faults:
        if fault.applies(cmdlet, call_number, object_names):
            return fault
    return None
