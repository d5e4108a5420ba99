"""The PipelineHandler the wire layer calls for one simulated host."""

from __future__ import annotations

from ipsec_deploy.lab.netsecurity.executor import run_pipeline
from ipsec_deploy.lab.netsecurity.host import LabHost
from ipsec_deploy.lab.netsecurity.scripts import ScriptRegistry
from ipsec_deploy.lab.pipeline import PipelineRequest, PipelineResult


class NetSecurityHandler:
    """Runs decoded pipelines on one simulated Windows Server 2019 host (a simulator, not Windows).

    Each pipeline runs under the lab network's lock, after reloading state
    other processes saved and running the scheduled tasks that are due, and
    the state is saved when it ends.
    """

    def __init__(self, host: LabHost, scripts: ScriptRegistry | None = None) -> None:
        self.host = host
        self.scripts = scripts
        if scripts is None:
            # Imported here because the counterparts import this package.
            from ipsec_deploy.lab.shipped_scripts import ensure_shipped_scripts_registered

            ensure_shipped_scripts_registered()

    def run_pipeline(self, request: PipelineRequest) -> PipelineResult:
        with self.host.network.transaction():
            self.host.network.run_due_tasks()
            return run_pipeline(self.host, request, self.scripts)
