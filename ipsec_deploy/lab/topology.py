"""The inventory's ``lab`` section: how the lab simulates the inventory's hosts.

The production loader keeps the section as raw YAML (``Inventory.lab``).
This module checks it and combines it with the host entries: name, domain,
forest and data-plane addresses come from the inventory, while the lab
section adds the account password, certificates, foreign rules, extra forest
trusts and faults. Every problem is reported with its ``file:line``, as the
loader reports its own. docs/lab.md describes the section field by field.

The lab listens only on loopback addresses: each host's ``address`` must be
an IP in 127.0.0.0/8 or ::1, and the listener binds that address and the
host's connection port.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ipsec_deploy.inventory.loader import _InventoryReader, suggest
from ipsec_deploy.inventory.model import Host, Inventory, Location
from ipsec_deploy.inventory.problems import ProblemCollector
from ipsec_deploy.inventory.yaml_source import SourceList, SourceMap, YamlSourceError, load_yaml_text
from ipsec_deploy.lab.faults import FaultPlan
from ipsec_deploy.lab.netsecurity import CmdletError, CmdletFault, HostFacts, MachineCertificate
from ipsec_deploy.lab.netsecurity.binding import Binder
from ipsec_deploy.lab.netsecurity.spec import load_spec

LAB_KEYS = ("password", "state_dir", "controller_address", "hosts")
HOST_KEYS = ("scheme", "domain", "forest", "certificates", "trusted_forests", "foreign_rules", "open_ports", "ikeext_running", "faults")
CERTIFICATE_KEYS = ("subject", "issuer", "root_ca")
FAULT_KEYS = ("refuse_connections", "latency_seconds", "reject_credentials", "drop_after_requests", "fail_cmdlets")
FAIL_CMDLET_KEYS = ("cmdlet", "message", "object_name", "call_number")
# The lab's listeners implement these WinRM authentication methods only.
LAB_AUTH_METHODS = {"negotiate": "negotiate", "ntlm": "negotiate", "basic": "basic"}
DEFAULT_STATE_FOLDER = Path(".ipsec-deploy") / "lab-state"


@dataclass(frozen=True)
class LabHostSettings:
    """One simulated host: its facts, where its listener binds, and the listener's faults."""

    name: str
    facts: HostFacts
    address: str  # loopback address the listener binds
    port: int
    scheme: str  # "http" or "https"
    auth_method: str  # "negotiate" or "basic"
    username: str
    faults: FaultPlan
    foreign_rules_location: Location | None = None
    listen_location: Location | None = None  # the host's connection settings, for bind errors


@dataclass(frozen=True)
class LabTopology:
    """The checked lab section of one inventory."""

    inventory_path: str
    password: str
    state_dir: Path
    hosts: dict[str, LabHostSettings] = field(default_factory=dict)
    location: Location | None = None

    # The admin workstation's address in the simulated network; when set,
    # a host whose rules require IPsec from it drops the WinRM session.
    controller_address: str | None = None


def default_state_dir(inventory_path: str) -> Path:
    """Return ``.ipsec-deploy/lab-state/<inventory stem>`` in the inventory's folder."""
    path = Path(inventory_path)
    return path.parent / DEFAULT_STATE_FOLDER / path.stem


def load_topology(inventory: Inventory) -> LabTopology:
    """Check the inventory's lab section and build the simulated hosts; raise InventoryError on problems."""
    problems = ProblemCollector()
    reader = _LabSectionReader(inventory, problems)
    topology = reader.read()
    problems.raise_if_errors()
    assert topology is not None
    return topology


class _LabSectionReader(_InventoryReader):
    """Reads the lab section with the loader's helpers, so messages look the same."""

    def __init__(self, inventory: Inventory, problems: ProblemCollector) -> None:
        super().__init__(inventory.path, problems)
        self.inventory = inventory
        self._document: Any = None

    def read(self) -> LabTopology | None:
        inventory = self.inventory
        if inventory.lab is None or inventory.lab_location is None:
            self.error(1, "the inventory has no 'lab' section; add one with at least 'password' "
                          "to run its hosts in the lab (see docs/lab.md)")
            return None
        line = inventory.lab_location.line
        section = self.mapping(inventory.lab, line, "the lab section")
        if section is None:
            return None
        self.check_keys(section, LAB_KEYS, "the lab section")

        password = self.string(section, "password", "the lab section")
        if password == "":
            self.error(section.line_of("password"), "'password' in the lab section must not be empty")
        state_dir = default_state_dir(inventory.path)
        if "state_dir" in section:
            folder = self.string(section, "state_dir", "the lab section")
            if folder:
                state_dir = Path(inventory.path).parent / folder

        host_sections = self.mapping(section.get("hosts"), section.line_of("hosts"), "hosts of the lab section")
        for name in host_sections or {}:
            if name not in inventory.hosts:
                self.error(host_sections.line_of(name),
                           f"unknown host '{name}' in the lab section{suggest(name, inventory.hosts)}; "
                           f"inventory hosts: {', '.join(inventory.hosts)}")

        hosts: dict[str, LabHostSettings] = {}
        endpoints: dict[tuple[str, int], str] = {}
        for name, host in inventory.hosts.items():
            body = host_sections.get(name) if host_sections else None
            where = f"lab host '{name}'"
            body_map = self.mapping(body, host_sections.line_of(name) if host_sections else line, where)
            settings = self.read_host(host, body_map, where) if body_map is not None else None
            if settings is None:
                continue
            key = (settings.address, settings.port)
            if key in endpoints:
                self.error(self.host_line(name, "connection"),
                           f"hosts '{endpoints[key]}' and '{name}' both listen on {settings.address} port "
                           f"{settings.port}; give each host its own connection port or loopback address")
            endpoints[key] = name
            hosts[name] = settings

        controller = None
        if "controller_address" in section:
            parsed = self.ip_address(section["controller_address"], section.line_of("controller_address"), "controller_address of the lab section")
            controller = str(parsed) if parsed is not None else None
        return LabTopology(inventory.path, password or "", state_dir, hosts, inventory.lab_location, controller)

    # Host entries

    def host_line(self, host_name: str, key: str) -> int:
        """Return the line of ``hosts.<name>.<key>`` in the inventory file, or of the host entry."""
        if self._document is None:
            try:
                self._document = load_yaml_text(Path(self.inventory.path).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, YamlSourceError):
                self._document = {}
        host = self.inventory.hosts[host_name]
        fallback = host.location.line if host.location else 1
        hosts = self._document.get("hosts") if isinstance(self._document, SourceMap) else None
        entry = hosts.get(host_name) if isinstance(hosts, SourceMap) else None
        return entry.line_of(key) if isinstance(entry, SourceMap) else fallback

    def read_host(self, host: Host, body: SourceMap, where: str) -> LabHostSettings | None:
        self.check_keys(body, HOST_KEYS, where)
        address = self.listen_address(host)
        connection = host.connection
        auth_method = LAB_AUTH_METHODS.get(connection.auth)
        if auth_method is None:
            self.error(self.host_line(host.name, "connection"),
                       f"host '{host.name}' uses auth {connection.auth}, which the lab does not implement; "
                       "use auth negotiate, ntlm or basic for lab hosts")
        if not connection.username:
            self.error(self.host_line(host.name, "connection"),
                       f"host '{host.name}' has no connection username; the lab accepts that user name "
                       "with the lab password, so set connection.username")

        scheme = self.choice(body, "scheme", ("http", "https"), where, connection.transport)
        facts = HostFacts(
            # The computer name the inventory expects, as the host would report it.
            computer_name=host.computer_name or host.name,
            addresses=[str(ip) for ip in host.ip_addresses],
            # The machine's real membership; it differs from the inventory's
            # only when a test simulates an inventory that is wrong about it.
            domain=self.string(body, "domain", where, host.domain),
            forest=self.string(body, "forest", where, host.forest),
            trusted_forests=self.trusted_forests(host, body, where),
            machine_certificates=self.certificates(host, body, where),
            foreign_rules=self.foreign_rules(body, where),
            fail_cmdlets=[],
        )
        faults, cmdlet_faults = self.faults(body, where)
        facts.fail_cmdlets = cmdlet_faults
        if "open_ports" in body:
            items = self.sequence(body["open_ports"], body.line_of("open_ports"), f"open_ports of {where}") or []
            ports = [p for p in items if isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536]
            if len(ports) != len(items):
                self.error(body.line_of("open_ports"), f"open_ports of {where} must be port numbers from 1 to 65535")
            facts.open_ports = ports
        facts.ikeext_running = self.boolean(body, "ikeext_running", where, True)

        if address is None or auth_method is None or not connection.username or scheme is None:
            return None
        return LabHostSettings(
            name=host.name,
            facts=facts,
            address=address,
            port=connection.effective_port,
            scheme=scheme,
            auth_method=auth_method,
            username=connection.username,
            faults=faults,
            foreign_rules_location=self.loc(body.line_of("foreign_rules")) if "foreign_rules" in body else None,
            listen_location=self.loc(self.host_line(host.name, "connection")),
        )

    def listen_address(self, host: Host) -> str | None:
        try:
            address = ipaddress.ip_address(host.address.strip("[]"))
        except ValueError:
            address = None
        if address is None or not address.is_loopback:
            self.error(self.host_line(host.name, "address"),
                       f"host '{host.name}' has address {host.address!r}, but lab hosts listen on loopback "
                       "addresses only: set address to an IP in 127.0.0.0/8 or ::1 (the lab never binds "
                       "or sends to other addresses; the ip list stays simulation data)")
            return None
        return str(address)

    def trusted_forests(self, host: Host, body: SourceMap, where: str) -> list[str]:
        forest = self.inventory.forests.get(host.forest or host.domain or "")
        trusted = list(forest.trusts) if forest else []
        if "trusted_forests" in body:
            items = self.sequence(body["trusted_forests"], body.line_of("trusted_forests"), f"trusted_forests of {where}")
            trusted += [str(item) for item in items or []]
        return trusted

    def certificates(self, host: Host, body: SourceMap, where: str) -> list[MachineCertificate]:
        if "certificates" not in body:
            return []
        items = self.sequence(body["certificates"], body.line_of("certificates"), f"certificates of {where}")
        result = []
        for index, item in enumerate(items or []):
            item_where = f"certificate {index + 1} of {where}"
            entry = self.mapping(item, items.line_of(index), item_where)
            if entry is None:
                continue
            self.check_keys(entry, CERTIFICATE_KEYS, item_where)
            issuer = self.string(entry, "issuer", item_where)
            # A computer certificate's subject is usually the host's DNS name.
            subject = self.string(entry, "subject", item_where, f"CN={host.name.lower()}.{host.domain}"
                                  if host.domain else f"CN={host.name.lower()}")
            root_ca = self.string(entry, "root_ca", item_where, None)
            if issuer:
                result.append(MachineCertificate(subject, issuer, root_ca))
        return result

    def foreign_rules(self, body: SourceMap, where: str) -> list[dict[str, Any]]:
        if "foreign_rules" not in body:
            return []
        items = self.sequence(body["foreign_rules"], body.line_of("foreign_rules"), f"foreign_rules of {where}")
        spec = load_spec()
        cmdlet = spec.cmdlet("New-NetIPsecRule")
        assert cmdlet is not None
        managed_group = self.inventory.settings.managed_group
        rules = []
        for index, item in enumerate(items or []):
            line = items.line_of(index)
            item_where = f"foreign rule {index + 1} of {where}"
            entry = self.mapping(item, line, item_where)
            if entry is None:
                continue
            parameters = {str(k): _plain(v) for k, v in entry.items()}
            group = str(parameters.get("Group", ""))
            if group.lower() == managed_group.lower():
                self.error(entry.line_of("Group"),
                           f"{item_where} is in the managed group '{managed_group}', so ipsec-deploy would "
                           "treat it as its own; give foreign rules another Group")
                continue
            try:
                # Bound as New-NetIPsecRule would bind them, to catch names and enum values now.
                Binder(spec, cmdlet).bind(list(parameters.items()))
            except CmdletError as error:
                self.error(line, f"{item_where}: {error.record.message}")
                continue
            rules.append(parameters)
        return rules

    # Faults

    def faults(self, body: SourceMap, where: str) -> tuple[FaultPlan, list[CmdletFault]]:
        plan = FaultPlan()
        if "faults" not in body:
            return plan, []
        fault_where = f"faults of {where}"
        section = self.mapping(body["faults"], body.line_of("faults"), fault_where)
        if section is None:
            return plan, []
        self.check_keys(section, FAULT_KEYS, fault_where)
        plan.refuse_connections = self.boolean(section, "refuse_connections", fault_where, False)
        plan.reject_credentials = self.boolean(section, "reject_credentials", fault_where, False)
        plan.drop_after_requests = self.integer(section, "drop_after_requests", fault_where, 0, 1_000_000)
        if "latency_seconds" in section:
            latency = section["latency_seconds"]
            if isinstance(latency, bool) or not isinstance(latency, (int, float)) or not 0 <= latency <= 600:
                self.error(section.line_of("latency_seconds"),
                           f"'latency_seconds' in {fault_where} must be a number of seconds from 0 to 600, "
                           f"not {latency!r}")
            else:
                plan.latency = float(latency)
        return plan, self.cmdlet_faults(section, fault_where)

    def cmdlet_faults(self, section: SourceMap, where: str) -> list[CmdletFault]:
        if "fail_cmdlets" not in section:
            return []
        items = self.sequence(section["fail_cmdlets"], section.line_of("fail_cmdlets"), f"fail_cmdlets of {where}")
        spec = load_spec()
        faults = []
        for index, item in enumerate(items or []):
            item_where = f"fail_cmdlets entry {index + 1} of {where}"
            entry = self.mapping(item, items.line_of(index), item_where)
            if entry is None:
                continue
            self.check_keys(entry, FAIL_CMDLET_KEYS, item_where)
            name = self.string(entry, "cmdlet", item_where)
            if name is not None and spec.cmdlet(name) is None:
                self.error(entry.line_of("cmdlet"),
                           f"unknown cmdlet '{name}' in {item_where}{suggest(name, [c.name for c in spec.cmdlets.values()])}")
                continue
            message = self.string(entry, "message", item_where, "The lab failed this cmdlet as the inventory's lab section requests.")
            object_name = self.string(entry, "object_name", item_where, None)
            call_number = self.integer(entry, "call_number", item_where, 1, 1_000_000)
            if name and message is not None:
                canonical = spec.cmdlet(name).name  # type: ignore[union-attr]
                faults.append(CmdletFault(canonical, message, object_name=object_name, call_number=call_number))
        return faults


def _plain(value: Any) -> Any:
    """Turn SourceMap/SourceList values into the plain dicts and lists cmdlet parameters take."""
    if isinstance(value, SourceList):
        return [_plain(item) for item in value]
    if isinstance(value, SourceMap):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
