"""The fixed scripts the lab runs: each script ipsec-deploy ships, recognised by its exact text.

The lab cannot run PowerShell. A test registers each shipped script with a
Python counterpart that does what the script does, through the emulated
cmdlets (``LabHost.invoke``). Any other script text fails, so a script
changed without its counterpart makes the tests fail instead of passing
against stale behaviour.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ipsec_deploy.lab.pipeline import PipelineResult

if TYPE_CHECKING:
    from ipsec_deploy.lab.netsecurity.host import LabHost

# A counterpart gets the host, the script's named parameters and its input
# objects. It returns a PipelineResult, a list of output objects, one object
# or None, and raises CmdletError for a terminating error.
ScriptCounterpart = Callable[["LabHost", dict[str, Any], list[Any]], "PipelineResult | list[Any] | Any"]


def normalize_script_text(text: str) -> str:
    """Drop a byte order mark and use LF line ends, so a checkout's line-end conversion does not matter."""
    return text.lstrip("\ufeff").replace("\r\n", "\n")


class ScriptRegistry:
    """Script texts and their Python counterparts."""

    def __init__(self) -> None:
        self._counterparts: dict[str, ScriptCounterpart] = {}

    def register(self, text: str, counterpart: ScriptCounterpart) -> None:
        self._counterparts[normalize_script_text(text)] = counterpart

    def unregister(self, text: str) -> None:
        self._counterparts.pop(normalize_script_text(text), None)

    def find(self, text: str) -> ScriptCounterpart | None:
        return self._counterparts.get(normalize_script_text(text))

    def __len__(self) -> int:
        return len(self._counterparts)


DEFAULT_SCRIPTS = ScriptRegistry()


def register_script(text: str, counterpart: ScriptCounterpart) -> None:
    """Register a shipped script's text and counterpart in the registry handlers use by default."""
    DEFAULT_SCRIPTS.register(text, counterpart)
