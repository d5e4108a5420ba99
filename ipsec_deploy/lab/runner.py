"""Start the lab for an inventory: one WinRM listener and emulated host per inventory host.

All listeners run in this process, on threads, and share one ``LabNetwork``
saved in a state directory, so a second start (or another process on the
same directory) sees the rules a deployment left behind::

    with start_lab(load_inventory("inventory/lab.yaml")) as lab:
        print(lab.endpoints["DB-SRV01"], lab.password)

These are simulated hosts, not Windows: see docs/lab.md for what the lab
emulates.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from ipsec_deploy.inventory.model import Inventory, Location
from ipsec_deploy.inventory.problems import InventoryError, Problem
from ipsec_deploy.lab.netsecurity import CmdletError, HostFacts, LabHost, LabNetwork, NetSecurityHandler
from ipsec_deploy.lab.netsecurity.management import management_blocked
from ipsec_deploy.lab.server import LabListener
from ipsec_deploy.lab.topology import LabTopology, load_topology

log = logging.getLogger("ipsec_deploy.lab")

CA_BUNDLE_NAME = "ca-bundle.pem"


@dataclass
class RunningLab:
    """Listeners and emulated hosts started for one inventory; stop it, or use it as a context manager."""

    topology: LabTopology
    network: LabNetwork
    listeners: dict[str, LabListener] = field(default_factory=dict)  # by inventory host name
    hosts: dict[str, LabHost] = field(default_factory=dict)  # by inventory host name
    ca_file: Path | None = None  # PEM bundle of the HTTPS listeners' CAs; None without HTTPS hosts

    @property
    def password(self) -> str:
        """The password every lab account accepts."""
        return self.topology.password

    @property
    def state_dir(self) -> Path:
        return self.topology.state_dir

    @property
    def endpoints(self) -> dict[str, str]:
        """Each host's WinRM endpoint URL, such as http://127.0.0.1:15985/wsman."""
        return {name: listener.endpoint for name, listener in self.listeners.items()}

    def stop(self) -> None:
        for listener in self.listeners.values():
            listener.stop()

    def __enter__(self) -> RunningLab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_lab(inventory: Inventory, state_dir: str | Path | None = None,
              ports: Mapping[str, int] | None = None) -> RunningLab:
    """Start a listener and emulated host for every inventory host; raise InventoryError for a bad lab section.

    ``state_dir`` replaces the lab section's state directory. ``ports`` replaces
    hosts' connection ports by host name, where 0 takes a free port; read the
    ports in use from ``RunningLab.listeners``.
    """
    topology = load_topology(inventory)
    if state_dir is not None:
        topology = LabTopology(topology.inventory_path, topology.password, Path(state_dir), topology.hosts,
                               topology.location, topology.controller_address)
    network = LabNetwork(topology.state_dir)
    lab = RunningLab(topology, network)

    try:
        for name, settings in topology.hosts.items():
            lab.hosts[name] = _add_host(network, settings.facts, settings.foreign_rules_location, topology)
            port = ports.get(name, settings.port) if ports is not None else settings.port
            listener = LabListener(
                NetSecurityHandler(lab.hosts[name]),
                host=settings.address,
                port=port,
                scheme=settings.scheme,
                accounts={settings.username: topology.password},
                auth=(settings.auth_method,),
                faults=settings.faults,
                machine_name=name,
            )
            # The WinRM port the controller connects to is the listener's
            # real port, known only after a start on port 0.
            listener.admit = _management_admission(network, lab.hosts[name], topology.controller_address, lambda listener=listener: listener.port)
            try:
                listener.start()
            except OSError as error:
                raise InventoryError([Problem(
                    "error", settings.listen_location or topology.location,
                    f"cannot listen for host '{name}' on {settings.address} port {port}: {error.strerror}; "
                    "stop what uses that port (if 'ipsec-deploy lab up' serves this inventory, run the command "
                    "without --lab), or change the host's connection port",
                )]) from None
            lab.listeners[name] = listener
        lab.ca_file = _write_ca_bundle(lab)
    except BaseException:
        lab.stop()
        raise
    return lab


def _management_admission(network: LabNetwork, host: LabHost, controller_address: str | None, winrm_port: Callable[[], int]):
    """Return the listener's admission check: drop requests the host's IPsec rules would drop."""
    if controller_address is None:
        return None

    def admit() -> bool:
        with network.transaction():
            return not management_blocked(host, controller_address, winrm_port())

    return admit


def _add_host(network: LabNetwork, facts: HostFacts, foreign_rules_location: Location | None,
              topology: LabTopology) -> LabHost:
    try:
        return network.add_host(facts)
    except CmdletError as error:
        # Parameter names and enum values were checked with the section; a
        # value the cmdlet itself rejects, such as an address, shows up here.
        location = foreign_rules_location or topology.location
        raise InventoryError([Problem(
            "error", location, f"a foreign rule of lab host '{facts.computer_name}' was rejected: {error.record.message}",
        )]) from None


def _write_ca_bundle(lab: RunningLab) -> Path | None:
    """Write the CAs of the HTTPS listeners into one PEM file, for the client's ca_bundle."""
    ca_files = [listener.ca_file for listener in lab.listeners.values() if listener.ca_file is not None]
    if not ca_files:
        return None
    bundle = lab.state_dir / CA_BUNDLE_NAME
    bundle.write_text("".join(path.read_text("ascii") for path in ca_files), "ascii")
    return bundle


def print_lab(lab: RunningLab, console: Console) -> None:
    """Print the banner and a table of the simulated hosts."""
    console.print(Panel(
        "These are [bold]simulated[/bold] hosts, not Windows: the ipsec-deploy lab emulates WinRM and the "
        "NetSecurity cmdlets on loopback addresses. Data-plane addresses exist only inside the simulation.",
        title="ipsec-deploy lab", border_style="yellow",
    ))
    # The endpoint (scheme, address and port) is what a user copies, so it never wraps.
    table = Table(show_header=True, header_style="bold")
    table.add_column("Host", no_wrap=True)
    table.add_column("Endpoint", no_wrap=True)
    table.add_column("Data-plane IPs")
    table.add_column("Domain", overflow="fold")
    for name, listener in lab.listeners.items():
        facts = lab.hosts[name].facts
        table.add_row(name, listener.endpoint, ", ".join(facts.addresses), facts.domain or "(workgroup)")
    console.print(table)
    console.print(f"State directory: {lab.state_dir}")
    if lab.ca_file is not None:
        console.print(f"CA bundle for HTTPS hosts: {lab.ca_file}")
    console.print("Log in with each host's connection username and the lab section's password. Press Ctrl-C to stop.")


def serve_lab(inventory: Inventory, state_dir: str | Path | None, console: Console,
              stop: threading.Event | None = None, ports: Mapping[str, int] | None = None) -> None:
    """Start the lab, print its hosts, and serve until Ctrl-C (or until ``stop`` is set); then stop cleanly.

    ``state_dir`` and ``ports`` are passed to ``start_lab``.
    """
    stop = stop or threading.Event()
    with start_lab(inventory, state_dir, ports) as lab:
        # The hosts listen from here on, so Ctrl-C is a normal stop even while the banner prints.
        try:
            print_lab(lab, console)
            log.info("lab started for %s with %d hosts", inventory.path, len(lab.listeners))
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            console.print("Stopping the lab.")
    log.info("lab stopped for %s", inventory.path)
