"""Read an inventory YAML file into the typed model, reporting every problem with its line.

This module checks the shape of each section (keys, types, values, references
between sections). Checks that need the whole plan, such as mirrored pairs or
conflicting rules, live in ``ipsec_deploy.planner``.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from .model import (
    DEFAULT_MANAGED_GROUP,
    DEFAULT_POLICY_STORE,
    NETBIOS_NAME,
    AuthMethod,
    AuthProfile,
    ConnectionSettings,
    CryptoProfile,
    Endpoint,
    Forest,
    Group,
    Host,
    Inventory,
    IPNetwork,
    Location,
    MainModeProposal,
    Network,
    Policy,
    PolicyOverride,
    QuickModeProposal,
    Settings,
)
from .problems import InventoryError, ProblemCollector
from .yaml_source import SourceList, SourceMap, YamlSourceError, load_yaml_text

# Enum members from the NetSecurity module (EncryptionAlgorithm,
# HashAlgorithm, DiffieHellmanGroup, IPsecEncapsulation).
ENCRYPTION_ALGORITHMS = ("DES", "DES3", "AES128", "AES192", "AES256", "AESGCM128", "AESGCM192", "AESGCM256")
HASH_ALGORITHMS = ("MD5", "SHA1", "SHA256", "SHA384", "AESGMAC128", "AESGMAC192", "AESGMAC256")
DH_GROUPS = ("DH1", "DH2", "DH14", "DH19", "DH20", "DH24")
PFS_GROUPS = ("None", "SameAsMainMode") + DH_GROUPS
WEAK_ALGORITHMS = frozenset({"DES", "DES3", "MD5", "SHA1", "DH1", "DH2"})

# AES-GCM encrypts and authenticates at once, so Windows requires the
# matching AES-GMAC integrity algorithm with it in quick mode.
GCM_INTEGRITY = {"AESGCM128": "AESGMAC128", "AESGCM192": "AESGMAC192", "AESGCM256": "AESGMAC256"}

SECURITY_POLICIES = ("None", "Request", "Require")

# (inbound, outbound) pairs the New-NetIPsecRule help lists as valid; None/None
# is an exemption.
VALID_SECURITY_PAIRS = frozenset({("None", "None"), ("Request", "None"), ("Request", "Request"), ("Require", "Request"), ("Require", "Require")})
KEY_MODULES = ("Default", "IKEv1", "AuthIP", "IKEv2")
PROTOCOL_NAMES = ("Any", "TCP", "UDP", "ICMPv4", "ICMPv6")
CONNECTION_AUTHS = ("negotiate", "kerberos", "ntlm", "credssp", "certificate", "basic")
AUTH_METHODS = ("kerberos", "certificate", "ntlm", "pre_shared_key", "anonymous")

# Names end up in Windows object names (IPsecRuleName, -Name of the sets),
# which must stay readable and safe in any shell.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PORT_PATTERN = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?$")

TOP_LEVEL_KEYS = (
    "managed_group",
    "policy_store",
    "allow_pre_shared_keys",
    "allow_weak_crypto",
    "controller",
    "management_exemption",
    "connection",
    "forests",
    "hosts",
    "groups",
    "networks",
    "auth",
    "crypto",
    "exemptions",
    "policies",
    "lab",
)
CONNECTION_KEYS = (
    "transport",
    "port",
    "auth",
    "username",
    "password_env",
    "cert_validation",
    "ca_bundle",
    "client_certificate",
    "client_key",
    "operation_timeout_seconds",
)
HOST_KEYS = ("address", "ip", "domain", "forest", "computer_name", "connection", "policy_overrides")
FOREST_KEYS = ("trusts", "domain_controllers")
NETWORK_KEYS = ("addresses", "forest")
AUTH_PROFILE_KEYS = ("phase1", "phase2")
AUTH_METHOD_KEYS = ("method", "identity", "authority", "authority_type", "key_env")
CRYPTO_KEYS = ("main_mode", "quick_mode", "pfs_group", "main_mode_lifetime_minutes")
MAIN_MODE_KEYS = ("encryption", "hash", "key_exchange")
QUICK_MODE_KEYS = ("encapsulation", "encryption", "integrity")
POLICY_KEYS = (
    "name",
    "endpoint1",
    "endpoint2",
    "protocol",
    "endpoint1_ports",
    "endpoint2_ports",
    "security",
    "inbound_security",
    "outbound_security",
    "auth",
    "crypto",
    "key_module",
    "probe_port",
)
EXEMPTION_KEYS = ("name", "endpoint1", "endpoint2", "protocol", "endpoint1_ports", "endpoint2_ports")
OVERRIDE_KEYS = ("inbound_security", "outbound_security", "security", "auth", "crypto", "key_module")

# The IPsec rule name the planner gives the management exemption is
# <managed_group>-rule-management-exemption, so while it is planned no policy
# or exemption may take this name.
MANAGEMENT_EXEMPTION_NAME = "management-exemption"

_MISSING = object()


def load_inventory(path: str | Path) -> Inventory:
    """Read and check an inventory file; raise InventoryError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InventoryError([_file_problem(path, "inventory file not found")]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise InventoryError([_file_problem(path, f"cannot read inventory file: {error}")]) from None
    return parse_inventory(text, str(path))


def parse_inventory(text: str, file_name: str = "<inventory>") -> Inventory:
    """Parse inventory YAML text; raise InventoryError listing every problem."""
    problems = ProblemCollector()
    try:
        document = load_yaml_text(text)
    except YamlSourceError as error:
        problems.error(Location(file_name, error.line), error.message)
        raise InventoryError(problems.problems) from None

    reader = _InventoryReader(file_name, problems)
    inventory = reader.read(document)
    problems.raise_if_errors()
    assert inventory is not None
    return replace(inventory, warnings=tuple(problems.warnings))


def _file_problem(path: Path, message: str):
    from .problems import Problem

    return Problem("error", Location(str(path), 1), message)


def suggest(name: str, candidates) -> str:
    """Return ' (did you mean 'x'?)' for a close match, or ''."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""


def match_choice(value: Any, choices: tuple[str, ...]) -> str | None:
    """Return the choice equal to ``value`` ignoring case, as PowerShell matches enum names."""
    if not isinstance(value, str):
        return None
    for choice in choices:
        if choice.lower() == value.lower():
            return choice
    return None


class _InventoryReader:
    """Walks the YAML document section by section, collecting problems."""

    def __init__(self, file_name: str, problems: ProblemCollector) -> None:
        self.file = file_name
        self.problems = problems

        # Hosts whose addresses were already reported, so that endpoints
        # using them do not repeat the problem as "resolves to no address".
        self.hosts_with_address_errors: set[str] = set()

    # -- helpers -------------------------------------------------------

    def loc(self, line: int) -> Location:
        return Location(self.file, line)

    def error(self, line: int, message: str) -> None:
        self.problems.error(self.loc(line), message)

    def warning(self, line: int, message: str) -> None:
        self.problems.warning(self.loc(line), message)

    def check_keys(self, mapping: SourceMap, allowed: tuple[str, ...], where: str, listed: tuple[str, ...] | None = None) -> None:
        """Report each key outside ``allowed``; the hint suggests and lists ``listed`` (default: ``allowed``).

        A key that is allowed only so that a more specific error can reject
        it stays out of ``listed``.
        """
        listed = allowed if listed is None else listed
        for key in mapping:
            if key not in allowed:
                self.error(
                    mapping.line_of(key),
                    f"unknown key '{key}' in {where}{suggest(key, listed)}; "
                    f"allowed keys: {', '.join(listed)}",
                )

    def mapping(self, value: Any, line: int, where: str) -> SourceMap | None:
        if value is None:
            empty = SourceMap()
            empty.line = line
            empty.key_lines = {}
            return empty
        if not isinstance(value, SourceMap):
            self.error(line, f"{where} must be a mapping of key: value, not {_describe(value)}")
            return None
        return value

    def sequence(self, value: Any, line: int, where: str) -> SourceList | None:
        """Accept a list, or a single scalar as a one-item list."""
        if isinstance(value, SourceList):
            return value
        if value is None:
            self.error(line, f"{where} must not be empty")
            return None
        if isinstance(value, SourceMap):
            self.error(line, f"{where} must be a list, not a mapping")
            return None
        single = SourceList([value])
        single.line = line
        single.item_lines = [line]
        return single

    def string(self, mapping: SourceMap, key: str, where: str, default: Any = _MISSING) -> Any:
        if key not in mapping:
            if default is _MISSING:
                self.error(mapping.line, f"{where} is missing the required key '{key}'")
                return None
            return default
        value = mapping[key]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self.error(mapping.line_of(key), f"'{key}' in {where} must be a string, not {_describe(value)}")
            return None
        text = str(value)
        if any(ord(ch) < 32 for ch in text):
            self.error(mapping.line_of(key), f"'{key}' in {where} must not contain control characters or line breaks")
            return None
        return text

    def boolean(self, mapping: SourceMap, key: str, where: str, default: bool) -> bool:
        if key not in mapping:
            return default
        value = mapping[key]
        if not isinstance(value, bool):
            self.error(mapping.line_of(key), f"'{key}' in {where} must be true or false, not {value!r}")
            return default
        return value

    def integer(self, mapping: SourceMap, key: str, where: str, low: int, high: int) -> int | None:
        if key not in mapping:
            return None
        value = mapping[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.error(mapping.line_of(key), f"'{key}' in {where} must be a whole number from {low} to {high}, not {value!r}")
            return None
        return value

    def choice(self, mapping: SourceMap, key: str, choices: tuple[str, ...], where: str, default: Any = _MISSING) -> Any:
        if key not in mapping:
            if default is _MISSING:
                self.error(mapping.line, f"{where} is missing the required key '{key}'")
                return None
            return default
        value = mapping[key]
        matched = match_choice(value, choices)
        if matched is None:
            self.error(
                mapping.line_of(key),
                f"invalid {key} {value!r} in {where}{suggest(str(value), choices)}; "
                f"use one of: {', '.join(choices)}",
            )
            return None
        return matched

    def name(self, value: Any, line: int, kind: str) -> str | None:
        if not isinstance(value, str) or not NAME_PATTERN.match(value):
            self.error(
                line,
                f"invalid {kind} name {value!r}: use 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit",
            )
            return None
        return value

    # -- sections ------------------------------------------------------

    def read(self, document: Any) -> Inventory | None:
        if document is None:
            self.error(1, "the inventory is empty; see docs/inventory.md for the format")
            return None
        if not isinstance(document, SourceMap):
            self.error(1, "the inventory must be a mapping with keys such as hosts and policies")
            return None
        self.check_keys(document, TOP_LEVEL_KEYS, "the inventory")

        settings = self.read_settings(document)
        default_connection = self.read_connection(
            document.get("connection"), document.line_of("connection"), "connection", ConnectionSettings()
        )
        forests = self.read_forests(document)
        networks = self.read_networks(document, forests)
        hosts = self.read_hosts(document, default_connection, forests)
        groups = self.read_groups(document, hosts)
        controller = self.read_controller(document, hosts, groups, networks)
        self.check_name_clashes(hosts, groups, networks)
        auth_profiles = self.read_auth_profiles(document, settings)
        crypto_profiles = self.read_crypto_profiles(document, settings)

        resolver = _EndpointResolver(self, hosts, groups, networks)
        exemptions = self.read_policies(document, "exemptions", resolver, auth_profiles, crypto_profiles)
        policies = self.read_policies(document, "policies", resolver, auth_profiles, crypto_profiles)
        self.check_policy_names(exemptions + policies)
        self.check_management_exemption(document, settings, controller, exemptions + policies)
        self.check_overrides(hosts, policies, exemptions, auth_profiles, crypto_profiles)

        if not hosts and "hosts" not in document:
            self.error(document.line, "the inventory has no 'hosts' section; add at least one host")
        elif "hosts" in document and isinstance(document["hosts"], SourceMap) and not document["hosts"]:
            self.error(document.line_of("hosts"), "the 'hosts' section is empty; add at least one host")

        return Inventory(
            path=self.file,
            settings=settings,
            hosts=hosts,
            groups=groups,
            networks=networks,
            forests=forests,
            auth_profiles=auth_profiles,
            crypto_profiles=crypto_profiles,
            policies=tuple(policies),
            exemptions=tuple(exemptions),
            controller=controller,
            controller_location=self.loc(document.line_of("controller")) if "controller" in document else None,
            lab=document.get("lab"),
            lab_location=self.loc(document.line_of("lab")) if "lab" in document else None,
        )

    def read_settings(self, document: SourceMap) -> Settings:
        group = self.string(document, "managed_group", "the inventory", DEFAULT_MANAGED_GROUP)
        if group is not None and not NAME_PATTERN.match(group):
            self.error(document.line_of("managed_group"), f"invalid managed_group {group!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        store = self.string(document, "policy_store", "the inventory", DEFAULT_POLICY_STORE)
        known = match_choice(store, ("PersistentStore", "localhost")) if store is not None else None
        if known is not None:
            store = known
        elif store is not None and "\\" not in store.strip("\\"):
            self.error(
                document.line_of("policy_store"),
                f"invalid policy_store {store!r}: use PersistentStore (the host's local policy) or a GPO "
                "as DOMAIN\\GPO-name",
            )
            store = None
        elif store is not None:
            self.warning(
                document.line_of("policy_store"),
                f"policy_store '{store}' is a domain GPO, which every host it applies to shares; ipsec-deploy "
                "plans each host's objects separately, so 'apply' and 'revert' refuse it. Use it only to review "
                "'plan --format powershell'; deploying through a GPO is not supported yet",
            )
        return Settings(
            managed_group=group or DEFAULT_MANAGED_GROUP,
            policy_store=store or DEFAULT_POLICY_STORE,
            allow_pre_shared_keys=self.boolean(document, "allow_pre_shared_keys", "the inventory", False),
            allow_weak_crypto=self.boolean(document, "allow_weak_crypto", "the inventory", False),
            management_exemption=self.boolean(document, "management_exemption", "the inventory", False),
        )

    def read_controller(self, document: SourceMap, hosts, groups, networks: dict[str, Network]) -> tuple[IPNetwork, ...]:
        """Read the admin workstations' addresses: IP addresses, subnets or network names."""
        if "controller" not in document:
            return ()
        line = document.line_of("controller")
        items = self.sequence(document["controller"], line, "controller")
        if items is None:
            return ()
        if not items:
            self.error(line, "controller is empty: list the addresses of the admin workstations that run ipsec-deploy, or remove the key")
            return ()
        addresses: list[IPNetwork] = []
        for index, item in enumerate(items):
            item_line = items.line_of(index)
            reference = str(item).strip()
            if reference in networks:
                if not networks[reference].addresses:
                    self.error(item_line, f"network '{reference}' in controller has no addresses: add them under networks")
                addresses.extend(networks[reference].addresses)
            elif reference.lower() == "any":
                self.error(item_line, "controller 'any' would take every address as the admin workstation: list its addresses or subnets")
            elif _looks_like_address(reference):
                network = self.ip_network(reference, item_line, "controller")
                if network is None:
                    continue
                if network.prefixlen == 0:
                    self.error(item_line, f"controller {reference} covers every address: list the admin workstations' addresses or subnets")
                    continue
                addresses.append(network)
            elif reference in hosts or reference in groups:
                kind = "host" if reference in hosts else "group"
                self.error(
                    item_line,
                    f"controller '{reference}' is a {kind}: controller takes IP addresses, subnets or network names, "
                    "so write the admin workstation's address",
                )
            else:
                self.error(
                    item_line,
                    f"unknown network '{reference}' in controller{suggest(reference, networks)}: "
                    "use an IP address, a subnet such as 10.0.9.0/24, or a name defined under networks",
                )
        return tuple(dict.fromkeys(addresses))

    def check_management_exemption(self, document: SourceMap, settings: Settings, controller, policies: list[Policy]) -> None:
        if not settings.management_exemption:
            return
        if not controller and "controller" not in document:
            self.error(
                document.line_of("management_exemption"),
                "management_exemption: true needs the admin workstations' addresses, which are the remote side of the exemption: "
                "add 'controller: [ADDRESS]' to the inventory",
            )
        for policy in policies:
            if policy.name == MANAGEMENT_EXEMPTION_NAME:
                kind = "exemption" if policy.is_exemption else "policy"
                self.error(
                    policy.location.line,
                    f"{kind} name '{MANAGEMENT_EXEMPTION_NAME}' is taken by the exemption that management_exemption: true plans; rename the {kind}",
                )

    def read_connection(self, value: Any, line: int, where: str, base: ConnectionSettings) -> ConnectionSettings:
        section = self.mapping(value, line, where)
        if section is None:
            return base
        self.check_keys(section, CONNECTION_KEYS + ("password",), where, listed=CONNECTION_KEYS)
        if "password" in section:
            self.error(
                section.line_of("password"),
                f"a literal password is not allowed in {where}: remove it and set "
                "'password_env: VARIABLE_NAME' (then export that variable), or omit both "
                "to be prompted for the password",
            )

        fields: dict[str, Any] = {}
        if "transport" in section:
            fields["transport"] = self.choice(section, "transport", ("http", "https"), where)
        if "port" in section:
            fields["port"] = self.integer(section, "port", where, 1, 65535)
        if "auth" in section:
            fields["auth"] = self.choice(section, "auth", CONNECTION_AUTHS, where)
        if "username" in section:
            fields["username"] = self.string(section, "username", where)
        for key in ("ca_bundle", "client_certificate", "client_key"):
            if key in section:
                fields[key] = self.file_path(section, key, where)
        if "password_env" in section:
            env_name = self.string(section, "password_env", where)
            if env_name is not None and not ENV_NAME_PATTERN.match(env_name):
                self.error(section.line_of("password_env"), f"invalid password_env {env_name!r}: give the name of an environment variable, such as IPSEC_DEPLOY_PASSWORD")
                env_name = None
            fields["password_env"] = env_name
        if "cert_validation" in section:
            fields["cert_validation"] = self.boolean(section, "cert_validation", where, True)
            if fields["cert_validation"] is False:
                self.warning(section.line_of("cert_validation"), f"cert_validation is off in {where}: anyone on the network "
                                                                 "path can pose as the host and read the session; set ca_bundle instead")
        if "operation_timeout_seconds" in section:
            fields["operation_timeout_seconds"] = self.integer(section, "operation_timeout_seconds", where, 1, 3600)

        merged = {k: v for k, v in fields.items() if v is not None}
        result = ConnectionSettings(**{**base.__dict__, **merged})

        # A host that inherits Basic over HTTP from the default connection
        # without setting auth or transport itself was reported there.
        inherited_basic_http = base.auth == "basic" and base.transport == "http" and "auth" not in section and "transport" not in section
        if result.auth == "basic" and result.transport == "http" and not inherited_basic_http:
            self.error(
                section.line_of("auth") if "auth" in section else section.line,
                f"Basic authentication over plain HTTP in {where} would send the password "
                "unencrypted: use transport https, or auth negotiate (NTLM/Kerberos with "
                "message encryption) over http",
            )
        # Checked on the merged settings, so a host that inherits auth
        # certificate and only changes its transport is caught too.
        if "auth" in section:
            auth_line = section.line_of("auth")
        elif "transport" in section:
            auth_line = section.line_of("transport")
        else:
            auth_line = section.line
        if result.auth == "certificate" and result.transport == "https" and not (result.client_certificate and result.client_key):
            self.error(auth_line, f"certificate authentication in {where} needs client_certificate and client_key (PEM file paths)")
        if result.auth == "certificate" and result.transport == "http":
            self.error(auth_line, f"certificate authentication in {where} works only over https")
        return result

    def file_path(self, section: SourceMap, key: str, where: str) -> str | None:
        """Read a path of a file on this workstation; a relative one is read from the inventory's folder, as state_dir is."""
        value = self.string(section, key, where)
        if value is None:
            return None
        try:
            path = Path(value).expanduser()
            if not path.is_absolute() and self.file != "<inventory>":
                path = Path(self.file).resolve().parent / path
            is_file = path.is_file()
        except (RuntimeError, OSError) as error:
            # An unknown ~user, a name too long or a folder this user cannot read.
            self.error(section.line_of(key), f"{key} '{value}' of {where} cannot be used: {error}; give the path of a PEM file")
            return None
        if not is_file:
            # A warning, not an error: a plan can be made on a machine without the files.
            self.warning(section.line_of(key), f"{key} '{value}' of {where} is not a file ({path}); apply and verify "
                                               "cannot connect until it exists. Relative paths are read from the inventory's folder")
        return str(path)

    def read_forests(self, document: SourceMap) -> dict[str, Forest]:
        forests: dict[str, Forest] = {}
        section = self.mapping(document.get("forests"), document.line_of("forests"), "forests")
        if section is None:
            return forests
        for name, body in section.items():
            line = section.line_of(name)
            where = f"forest '{name}'"
            body_map = self.mapping(body, line, where)
            if body_map is None:
                continue
            self.check_keys(body_map, FOREST_KEYS, where)
            trusts: list[str] = []
            if "trusts" in body_map:
                items = self.sequence(body_map["trusts"], body_map.line_of("trusts"), f"trusts of {where}") or []
                trusts = [str(item) for item in items]
            controllers = []
            if "domain_controllers" in body_map:
                items = self.sequence(body_map["domain_controllers"], body_map.line_of("domain_controllers"), f"domain_controllers of {where}")
                for index, item in enumerate(items or []):
                    address = self.ip_address(item, items.line_of(index), f"domain controller of {where}")
                    if address is not None:
                        controllers.append(address)
            forests[name] = Forest(name, tuple(trusts), tuple(controllers), self.loc(line))

        for forest in forests.values():
            for trusted in forest.trusts:
                if trusted not in forests:
                    self.error(forest.location.line, f"forest '{forest.name}' trusts unknown forest '{trusted}'{suggest(trusted, forests)}; declare it under forests")
        return forests

    def ip_address(self, value: Any, line: int, what: str):
        try:
            return ipaddress.ip_address(str(value).strip())
        except ValueError:
            self.error(line, f"invalid IP address {value!r} for {what}: use a single IPv4 or IPv6 address such as 10.0.1.10")
            return None

    def ip_network(self, value: Any, line: int, what: str) -> IPNetwork | None:
        text = str(value).strip()
        try:
            return ipaddress.ip_network(text, strict=True)
        except ValueError as error:
            if "has host bits set" in str(error):
                fixed = ipaddress.ip_network(text, strict=False)
                self.error(line, f"invalid subnet {text!r} for {what}: it has host bits set; did you mean {fixed}?")
            else:
                self.error(line, f"invalid address or subnet {text!r} for {what}: use an address (10.0.1.10) or CIDR (10.0.1.0/24)")
            return None

    def read_networks(self, document: SourceMap, forests: dict[str, Forest]) -> dict[str, Network]:
        networks: dict[str, Network] = {}
        section = self.mapping(document.get("networks"), document.line_of("networks"), "networks")
        if section is None:
            return networks
        for name, body in section.items():
            line = section.line_of(name)
            if self.name(name, line, "network") is None:
                continue
            where = f"network '{name}'"
            forest = None
            if isinstance(body, SourceMap):
                self.check_keys(body, NETWORK_KEYS, where)
                if "addresses" not in body:
                    self.error(line, f"{where} is missing the required key 'addresses'")
                    continue
                items = self.sequence(body["addresses"], body.line_of("addresses"), f"addresses of {where}")
                forest = self.string(body, "forest", where, None)
                if forest is not None and forest not in forests:
                    self.error(body.line_of("forest"), f"unknown forest '{forest}' in {where}{suggest(forest, forests)}; declare it under forests")
            else:
                items = self.sequence(body, line, where)
            addresses = []
            for index, item in enumerate(items or []):
                network = self.ip_network(item, items.line_of(index), where)
                if network is not None:
                    addresses.append(network)
            networks[name] = Network(name, tuple(addresses), forest, self.loc(line))
        return networks

    def read_hosts(self, document: SourceMap, default_connection: ConnectionSettings, forests: dict[str, Forest]) -> dict[str, Host]:
        hosts: dict[str, Host] = {}
        section = self.mapping(document.get("hosts"), document.line_of("hosts"), "hosts")
        if section is None:
            return hosts
        seen_lower: dict[str, str] = {}
        for name, body in section.items():
            line = section.line_of(name)
            if self.name(name, line, "host") is None:
                continue
            # Windows computer names are case-insensitive.
            if name.lower() in seen_lower:
                self.error(line, f"duplicate host '{name}': it differs from '{seen_lower[name.lower()]}' only in case")
                continue
            seen_lower[name.lower()] = name
            where = f"host '{name}'"
            body_map = self.mapping(body, line, where)
            if body_map is None:
                continue
            self.check_keys(body_map, HOST_KEYS, where)

            address = self.string(body_map, "address", where, name)
            ips = []
            if "ip" not in body_map:
                self.error(line, f"{where} is missing the required key 'ip' (its data-plane addresses)")
                self.hosts_with_address_errors.add(name)
            else:
                items = self.sequence(body_map["ip"], body_map.line_of("ip"), f"ip of {where}")
                for index, item in enumerate(items or []):
                    parsed = self.ip_address(item, items.line_of(index), where)
                    if parsed is not None:
                        ips.append(parsed)
                    else:
                        self.hosts_with_address_errors.add(name)
            computer_name = self.string(body_map, "computer_name", where, None)
            if computer_name is not None and (not NETBIOS_NAME.fullmatch(computer_name) or computer_name.isdigit()):
                self.error(body_map.line_of("computer_name"),
                           f"invalid computer_name '{computer_name}' in {where}: give the Windows computer name "
                           "(1 to 15 letters, digits, hyphens or underscores, not only digits, as $env:COMPUTERNAME shows it)")
                computer_name = None
            domain = self.string(body_map, "domain", where, None)
            forest = self.string(body_map, "forest", where, None) or domain
            if forest is not None and forest not in forests:
                key = "forest" if "forest" in body_map else "domain"
                self.error(body_map.line_of(key), f"unknown forest '{forest}' in {where}{suggest(forest, forests)}; declare it under forests")

            connection = default_connection
            if "connection" in body_map:
                connection = self.read_connection(body_map["connection"], body_map.line_of("connection"), f"connection of {where}", default_connection)
            overrides = self.read_overrides(body_map, where)
            hosts[name] = Host(name, address or name, tuple(ips), domain, forest, connection, overrides, self.loc(line), computer_name)
            if hosts[name].expected_computer_name is None:
                self.warning(line, f"host '{name}' is named by an IP address, so ipsec-deploy cannot check that its "
                                   "session reaches the right computer; set computer_name to its Windows computer name")

        self.check_duplicate_ips(hosts)
        self.check_duplicate_endpoints(hosts)
        return hosts

    def check_duplicate_endpoints(self, hosts: dict[str, Host]) -> None:
        # Two entries with one WinRM endpoint would put both hosts' rules on the same machine.
        owner: dict[tuple[str, int], str] = {}
        for host in hosts.values():
            key = (_endpoint_address(host.address), host.connection.effective_port)
            if key in owner:
                self.error(host.location.line,
                           f"host '{host.name}' has the same WinRM endpoint as host '{owner[key]}' "
                           f"({host.address} port {key[1]}); each host entry must reach its own Windows host, "
                           "so correct its address or connection port")
            owner.setdefault(key, host.name)

    def check_duplicate_ips(self, hosts: dict[str, Host]) -> None:
        owner: dict[Any, str] = {}
        for host in hosts.values():
            for address in host.ip_addresses:
                if address in owner and owner[address] != host.name:
                    self.error(host.location.line, f"IP address {address} of host '{host.name}' is already used by host '{owner[address]}'")
                owner.setdefault(address, host.name)

    def read_overrides(self, body: SourceMap, where: str) -> tuple[PolicyOverride, ...]:
        if "policy_overrides" not in body:
            return ()
        section = self.mapping(body["policy_overrides"], body.line_of("policy_overrides"), f"policy_overrides of {where}")
        if section is None:
            return ()
        overrides = []
        for policy_name, values in section.items():
            line = section.line_of(policy_name)
            override_where = f"the override of policy '{policy_name}' on {where}"
            values_map = self.mapping(values, line, override_where)
            if values_map is None:
                continue
            self.check_keys(values_map, OVERRIDE_KEYS, override_where)
            inbound, outbound = self.read_security(values_map, override_where, None)
            overrides.append(
                PolicyOverride(
                    policy=str(policy_name),
                    inbound_security=inbound,
                    outbound_security=outbound,
                    auth=self.string(values_map, "auth", override_where, None),
                    crypto=self.string(values_map, "crypto", override_where, None),
                    key_module=self.choice(values_map, "key_module", KEY_MODULES, override_where, None),
                    location=self.loc(line),
                )
            )
        return tuple(overrides)

    def read_security(self, body: SourceMap, where: str, default: str | None) -> tuple[Any, Any]:
        """Read 'security' (both directions) or inbound_security/outbound_security."""
        inbound = outbound = default
        if "security" in body:
            if "inbound_security" in body or "outbound_security" in body:
                self.error(body.line_of("security"), f"{where} sets both 'security' and inbound_security/outbound_security: keep one")
            value = self.choice(body, "security", ("Require", "Request"), where)
            inbound = outbound = value or default
        if "inbound_security" in body:
            inbound = self.choice(body, "inbound_security", SECURITY_POLICIES, where)
        if "outbound_security" in body:
            outbound = self.choice(body, "outbound_security", SECURITY_POLICIES, where)
        return inbound, outbound

    def check_security_pair(self, inbound: str | None, outbound: str | None, line: int, where: str) -> None:
        if inbound is None or outbound is None or (inbound, outbound) in VALID_SECURITY_PAIRS:
            return
        self.error(
            line,
            f"{where}: inbound {inbound} with outbound {outbound} is not a combination Windows supports; "
            "use Require/Require, Require/Request, Request/Request or Request/None (inbound/outbound)",
        )

    def read_groups(self, document: SourceMap, hosts: dict[str, Host]) -> dict[str, Group]:
        groups: dict[str, Group] = {}
        section = self.mapping(document.get("groups"), document.line_of("groups"), "groups")
        if section is None:
            return groups
        raw: dict[str, tuple[list[tuple[str, int]], int]] = {}
        for name, members in section.items():
            line = section.line_of(name)
            if self.name(name, line, "group") is None:
                continue
            items = self.sequence(members, line, f"group '{name}'") or SourceList()
            raw[name] = ([(str(item), items.line_of(i)) for i, item in enumerate(items)], line)

        # Groups may contain hosts and other groups; expand them, refusing cycles.
        def expand(name: str, trail: tuple[str, ...]) -> list[str]:
            members, _ = raw[name]
            result: list[str] = []
            for member, member_line in members:
                if member in hosts:
                    result.append(member)
                elif member in raw:
                    if member in trail:
                        self.error(member_line, f"group '{name}' contains itself through '{member}': remove the cycle")
                        continue
                    result.extend(expand(member, trail + (member,)))
                else:
                    self.error(member_line, f"unknown host or group '{member}' in group '{name}'{suggest(member, list(hosts) + list(raw))}")
            return result

        for name, (_, line) in raw.items():
            members = expand(name, (name,))
            groups[name] = Group(name, tuple(dict.fromkeys(members)), self.loc(line))
        return groups

    def check_name_clashes(self, hosts: dict[str, Host], groups: dict[str, Group], networks: dict[str, Network]) -> None:
        # Endpoints refer to hosts, groups and networks by bare name, so one
        # name may only mean one thing.
        kinds = [("host", hosts), ("group", groups), ("network", networks)]
        for index, (kind_a, table_a) in enumerate(kinds):
            for kind_b, table_b in kinds[index + 1 :]:
                for name in table_a.keys() & table_b.keys():
                    item = table_b[name]
                    self.error(item.location.line, f"duplicate name '{name}': it is both a {kind_a} and a {kind_b}; rename one")

    def named_entries(self, document: SourceMap, key: str, kind: str):
        """Yield (name, line, where, body) for each valid entry of a section of named mappings."""
        section = self.mapping(document.get(key), document.line_of(key), key)
        if section is None:
            return
        for name, body in section.items():
            line = section.line_of(name)
            if self.name(name, line, kind) is None:
                continue
            where = f"{kind} '{name}'"
            body_map = self.mapping(body, line, where)
            if body_map is not None:
                yield name, line, where, body_map

    def read_auth_profiles(self, document: SourceMap, settings: Settings) -> dict[str, AuthProfile]:
        profiles: dict[str, AuthProfile] = {}
        for name, line, where, body_map in self.named_entries(document, "auth", "auth profile"):
            self.check_keys(body_map, AUTH_PROFILE_KEYS, where)
            if "phase1" not in body_map:
                self.error(line, f"{where} is missing the required key 'phase1'")
                continue
            phase1 = self.read_auth_methods(body_map, "phase1", where, settings)
            phase2 = self.read_auth_methods(body_map, "phase2", where, settings) if "phase2" in body_map else ()
            profiles[name] = AuthProfile(name, phase1, phase2, self.loc(line))
        return profiles

    def read_auth_methods(self, body: SourceMap, key: str, where: str, settings: Settings) -> tuple[AuthMethod, ...]:
        items = self.sequence(body[key], body.line_of(key), f"{key} of {where}")
        if items is not None and not items:
            self.error(body.line_of(key), f"{key} of {where} is empty: list at least one authentication method")
        methods = []
        for index, item in enumerate(items or []):
            line = items.line_of(index)
            item_where = f"{key} method {index + 1} of {where}"
            if isinstance(item, str):
                entry = SourceMap({"method": item})
                entry.line = line
                entry.key_lines = {"method": line}
            else:
                entry = self.mapping(item, line, item_where)
                if entry is None:
                    continue
            self.check_keys(entry, AUTH_METHOD_KEYS, item_where)
            method = self.choice(entry, "method", AUTH_METHODS, item_where)
            identity = self.choice(entry, "identity", ("machine", "user"), item_where, "machine" if key == "phase1" else "user")
            if method is None or identity is None:
                continue
            authority = self.string(entry, "authority", item_where, None)
            authority_type = self.choice(entry, "authority_type", ("Root", "Intermediate"), item_where, "Root")
            key_env = self.string(entry, "key_env", item_where, None)

            if method == "certificate" and not authority:
                self.error(line, f"{item_where}: certificate authentication needs 'authority', the issuing CA's name, such as \"CN=Corp Issuing CA 01, O=Corp, C=US\"")
            if method != "certificate" and "authority" in entry:
                self.error(entry.line_of("authority"), f"{item_where}: 'authority' applies only to method certificate")
            if method == "pre_shared_key":
                if not settings.allow_pre_shared_keys:
                    self.error(line, f"{item_where}: pre-shared keys are weak and meant for test labs only; set 'allow_pre_shared_keys: true' at the top of the inventory to use one anyway")
                if not key_env or not ENV_NAME_PATTERN.match(key_env):
                    self.error(line, f"{item_where}: a pre-shared key is read from an environment variable: set 'key_env: VARIABLE_NAME'")
            elif "key_env" in entry:
                self.error(entry.line_of("key_env"), f"{item_where}: 'key_env' applies only to method pre_shared_key")
            if key == "phase2" and method == "pre_shared_key":
                self.error(line, f"{item_where}: pre-shared keys are not available for phase 2 authentication")
            if key == "phase1" and identity == "user":
                self.error(line, f"{item_where}: phase 1 authenticates the computer; use identity machine (user identity belongs in phase2)")
            methods.append(AuthMethod(method, identity, authority, authority_type or "Root", key_env))
        return tuple(methods)

    def read_crypto_profiles(self, document: SourceMap, settings: Settings) -> dict[str, CryptoProfile]:
        profiles: dict[str, CryptoProfile] = {}
        for name, line, where, body_map in self.named_entries(document, "crypto", "crypto profile"):
            self.check_keys(body_map, CRYPTO_KEYS, where)
            main_mode = self.read_main_mode(body_map, where, settings)
            quick_mode = self.read_quick_mode(body_map, where, settings)
            pfs = self.choice(body_map, "pfs_group", PFS_GROUPS, where, "None") or "None"
            if pfs in WEAK_ALGORITHMS:
                self.weak(body_map.line_of("pfs_group"), pfs, f"pfs_group of {where}", settings)
            lifetime = self.integer(body_map, "main_mode_lifetime_minutes", where, 1, 2879999)
            profiles[name] = CryptoProfile(name, main_mode, quick_mode, pfs, lifetime, self.loc(line))
        return profiles

    def weak(self, line: int, algorithm: str, where: str, settings: Settings) -> None:
        if settings.allow_weak_crypto:
            self.warning(line, f"weak algorithm {algorithm} in {where} is allowed by 'allow_weak_crypto: true'")
        else:
            self.error(line, f"weak algorithm {algorithm} in {where}: use AES128 or stronger, SHA256 or stronger and DH14 or stronger, or set 'allow_weak_crypto: true' to accept it")

    def read_main_mode(self, body: SourceMap, where: str, settings: Settings) -> tuple[MainModeProposal, ...]:
        if "main_mode" not in body:
            self.error(body.line, f"{where} is missing the required key 'main_mode'")
            return ()
        items = self.sequence(body["main_mode"], body.line_of("main_mode"), f"main_mode of {where}")
        if items is not None and not items:
            self.error(body.line_of("main_mode"), f"main_mode of {where} is empty: list at least one proposal")
        proposals = []
        for index, item in enumerate(items or []):
            item_where = f"main mode proposal {index + 1} of {where}"
            entry = self.mapping(item, items.line_of(index), item_where)
            if entry is None:
                continue
            self.check_keys(entry, MAIN_MODE_KEYS, item_where)
            encryption = self.choice(entry, "encryption", ENCRYPTION_ALGORITHMS, item_where)
            hash_algorithm = self.choice(entry, "hash", HASH_ALGORITHMS, item_where)
            key_exchange = self.choice(entry, "key_exchange", DH_GROUPS, item_where)
            for key, value in (("encryption", encryption), ("hash", hash_algorithm), ("key_exchange", key_exchange)):
                if value in WEAK_ALGORITHMS:
                    self.weak(entry.line_of(key), value, item_where, settings)
            if encryption in GCM_INTEGRITY:
                self.error(entry.line_of("encryption"), f"{item_where}: AES-GCM is a quick mode (ESP) cipher; main mode (IKE) takes AES128, AES192 or AES256")
            if None not in (encryption, hash_algorithm, key_exchange):
                proposals.append(MainModeProposal(encryption, hash_algorithm, key_exchange))
        return tuple(proposals)

    def read_quick_mode(self, body: SourceMap, where: str, settings: Settings) -> tuple[QuickModeProposal, ...]:
        if "quick_mode" not in body:
            self.error(body.line, f"{where} is missing the required key 'quick_mode'")
            return ()
        items = self.sequence(body["quick_mode"], body.line_of("quick_mode"), f"quick_mode of {where}")
        if items is not None and not items:
            self.error(body.line_of("quick_mode"), f"quick_mode of {where} is empty: list at least one proposal")
        proposals = []
        for index, item in enumerate(items or []):
            item_where = f"quick mode proposal {index + 1} of {where}"
            entry = self.mapping(item, items.line_of(index), item_where)
            if entry is None:
                continue
            self.check_keys(entry, QUICK_MODE_KEYS, item_where)
            encapsulation = self.choice(entry, "encapsulation", ("ESP", "AH"), item_where, "ESP")
            integrity = self.choice(entry, "integrity", HASH_ALGORITHMS, item_where)
            encryption = None
            if encapsulation == "ESP":
                encryption = self.choice(entry, "encryption", ENCRYPTION_ALGORITHMS, item_where)
            elif "encryption" in entry:
                self.error(entry.line_of("encryption"), f"{item_where}: AH authenticates but does not encrypt, so it takes no 'encryption'; use encapsulation ESP to encrypt")
            for key, value in (("encryption", encryption), ("integrity", integrity)):
                if value in WEAK_ALGORITHMS:
                    self.weak(entry.line_of(key), value, item_where, settings)
            if encryption in GCM_INTEGRITY and integrity is not None and integrity != GCM_INTEGRITY[encryption]:
                self.error(entry.line_of("integrity"), f"{item_where}: {encryption} needs integrity {GCM_INTEGRITY[encryption]}")
            if encapsulation == "ESP" and encryption is None and "encryption" not in entry:
                continue
            if encapsulation is not None and integrity is not None and (encapsulation == "AH" or encryption is not None):
                proposals.append(QuickModeProposal(encapsulation, encryption, integrity))
        return tuple(proposals)

    def read_policies(self, document: SourceMap, key: str, resolver: "_EndpointResolver", auth_profiles, crypto_profiles) -> list[Policy]:
        if key not in document:
            return []
        items = self.sequence(document[key], document.line_of(key), key)
        is_exemption = key == "exemptions"
        kind = "exemption" if is_exemption else "policy"
        allowed = EXEMPTION_KEYS if is_exemption else POLICY_KEYS
        policies = []
        for index, item in enumerate(items or []):
            line = items.line_of(index)
            body = self.mapping(item, line, f"{kind} {index + 1}")
            if body is None:
                continue
            raw_name = body.get("name")
            name = self.name(raw_name, body.line_of("name"), kind) if "name" in body else None
            if "name" not in body:
                self.error(line, f"{kind} {index + 1} is missing the required key 'name'")
            where = f"{kind} '{name or index + 1}'"
            self.check_keys(body, allowed, where)

            endpoint1 = resolver.resolve(body, "endpoint1", where)
            endpoint2 = resolver.resolve(body, "endpoint2", where)
            protocol = self.read_protocol(body, where)
            ports1 = self.read_ports(body, "endpoint1_ports", where, protocol)
            ports2 = self.read_ports(body, "endpoint2_ports", where, protocol)

            if is_exemption:
                fields: dict[str, Any] = {"inbound_security": "None", "outbound_security": "None"}
            else:
                inbound, outbound = self.read_security(body, where, "Require")
                auth = self.string(body, "auth", where)
                crypto = self.string(body, "crypto", where)
                if auth is not None and auth not in auth_profiles:
                    self.error(body.line_of("auth"), f"unknown auth profile '{auth}' in {where}{suggest(auth, auth_profiles)}; define it under auth")
                if crypto is not None and crypto not in crypto_profiles:
                    self.error(body.line_of("crypto"), f"unknown crypto profile '{crypto}' in {where}{suggest(crypto, crypto_profiles)}; define it under crypto")
                if inbound == "None" and outbound == "None":
                    self.error(line, f"{where} has no security in either direction; list it under exemptions instead")
                else:
                    self.check_security_pair(inbound, outbound, line, where)
                fields = {
                    "inbound_security": inbound or "Require",
                    "outbound_security": outbound or "Require",
                    "auth": auth,
                    "crypto": crypto,
                    "key_module": self.choice(body, "key_module", KEY_MODULES, where, "Default") or "Default",
                    "probe_port": self.integer(body, "probe_port", where, 1, 65535),
                }
            if endpoint1 is None or endpoint2 is None or protocol is None or name is None:
                continue
            policies.append(
                Policy(
                    name=name,
                    endpoint1=endpoint1,
                    endpoint2=endpoint2,
                    protocol=protocol,
                    endpoint1_ports=ports1,
                    endpoint2_ports=ports2,
                    is_exemption=is_exemption,
                    location=self.loc(line),
                    **fields,
                )
            )
        return policies

    def read_protocol(self, body: SourceMap, where: str) -> str | None:
        if "protocol" not in body:
            return "Any"
        value = body["protocol"]
        if isinstance(value, int) and not isinstance(value, bool):
            if 0 <= value <= 255:
                return str(value)
            self.error(body.line_of("protocol"), f"invalid protocol number {value} in {where}: use 0-255")
            return None
        matched = match_choice(value, PROTOCOL_NAMES)
        if matched is None:
            self.error(
                body.line_of("protocol"),
                f"invalid protocol {value!r} in {where}{suggest(str(value), PROTOCOL_NAMES)}; use one of: {', '.join(PROTOCOL_NAMES)}, or a protocol number 0-255",
            )
        return matched

    def read_ports(self, body: SourceMap, key: str, where: str, protocol: str | None) -> tuple[str, ...]:
        if key not in body:
            return ()
        line = body.line_of(key)
        if protocol not in ("TCP", "UDP", "6", "17"):
            self.error(line, f"{where} sets {key} but ports need protocol TCP or UDP (protocol is {protocol})")
            return ()
        items = self.sequence(body[key], line, f"{key} of {where}")
        ports = []
        for index, item in enumerate(items or []):
            text = str(item).strip()
            match = PORT_PATTERN.match(text)
            low = int(match.group(1)) if match else -1
            high = int(match.group(2)) if match and match.group(2) else low
            if not match or not (1 <= low <= 65535 and 1 <= high <= 65535 and low <= high):
                self.error(items.line_of(index), f"invalid port {item!r} in {key} of {where}: use a number 1-65535 or a range such as 5000-5100")
                continue
            ports.append(text)
        return tuple(ports)

    def check_policy_names(self, policies: list[Policy]) -> None:
        first: dict[str, Policy] = {}
        for policy in policies:
            if policy.name in first:
                self.error(policy.location.line, f"duplicate policy or exemption name '{policy.name}' (first defined on line {first[policy.name].location.line})")
            else:
                first[policy.name] = policy

    def check_overrides(self, hosts, policies, exemptions, auth_profiles, crypto_profiles) -> None:
        by_name = {policy.name: policy for policy in policies}
        exemption_names = {exemption.name for exemption in exemptions}
        for host in hosts.values():
            for override in host.policy_overrides:
                line = override.location.line
                if override.policy in exemption_names:
                    self.error(line, f"host '{host.name}' overrides exemption '{override.policy}': exemptions have no settings to override")
                    continue
                if override.policy not in by_name:
                    self.error(line, f"host '{host.name}' overrides unknown policy '{override.policy}'{suggest(override.policy, by_name)}")
                    continue
                policy = by_name[override.policy]
                inbound = override.inbound_security or policy.inbound_security
                outbound = override.outbound_security or policy.outbound_security
                if inbound == "None" and outbound == "None":
                    self.error(line, f"host '{host.name}' turns policy '{override.policy}' into an exemption (None/None) while its peers keep it; list the traffic under exemptions instead")
                else:
                    self.check_security_pair(inbound, outbound, line, f"the override of policy '{override.policy}' on host '{host.name}'")
                if override.auth is not None and override.auth not in auth_profiles:
                    self.error(line, f"unknown auth profile '{override.auth}' in the override of '{override.policy}' on host '{host.name}'{suggest(override.auth, auth_profiles)}")
                if override.crypto is not None and override.crypto not in crypto_profiles:
                    self.error(line, f"unknown crypto profile '{override.crypto}' in the override of '{override.policy}' on host '{host.name}'{suggest(override.crypto, crypto_profiles)}")


class _EndpointResolver:
    """Turns endpoint references (host, group, network, address, CIDR, any) into addresses."""

    def __init__(self, reader: _InventoryReader, hosts, groups, networks) -> None:
        self.reader = reader
        self.hosts = hosts
        self.groups = groups
        self.networks = networks

    def resolve(self, body: SourceMap, key: str, where: str) -> Endpoint | None:
        if key not in body:
            self.reader.error(body.line, f"{where} is missing the required key '{key}'")
            return None
        items = self.reader.sequence(body[key], body.line_of(key), f"{key} of {where}")
        if items is None:
            return None
        references: list[str] = []
        addresses: list[IPNetwork] = []
        hosts: set[str] = set()
        networks: list[Network] = []
        ok = True
        for index, item in enumerate(items):
            line = items.line_of(index)
            reference = str(item).strip()
            references.append(reference)
            if reference.lower() == "any":
                if len(items) > 1:
                    self.reader.error(line, f"'any' in {key} of {where} cannot be combined with other entries")
                    ok = False
                continue
            if reference in self.hosts:
                hosts.add(reference)
                addresses.extend(ipaddress.ip_network(a) for a in self.hosts[reference].ip_addresses)
            elif reference in self.groups:
                for member in self.groups[reference].hosts:
                    hosts.add(member)
                    addresses.extend(ipaddress.ip_network(a) for a in self.hosts[member].ip_addresses)
            elif reference in self.networks:
                networks.append(self.networks[reference])
                addresses.extend(self.networks[reference].addresses)
            elif _looks_like_address(reference):
                network = self.reader.ip_network(reference, line, f"{key} of {where}")
                if network is None:
                    ok = False
                else:
                    addresses.append(network)
            else:
                candidates = list(self.hosts) + list(self.groups) + list(self.networks)
                self.reader.error(line, f"unknown host, group or network '{reference}' in {key} of {where}{suggest(reference, candidates)}")
                ok = False
        if not ok:
            return None
        is_any = [r.lower() for r in references] == ["any"]
        if not is_any and not addresses and hosts & self.reader.hosts_with_address_errors:
            return None
        if not is_any and not addresses:
            # An empty endpoint would become "Any" in the rule and cover all
            # traffic of the host, which an empty group never means.
            self.reader.error(
                items.line,
                f"{key} of {where} resolves to no address ({', '.join(references)} is empty); "
                "add hosts or addresses, or write 'any' if every address is meant",
            )
            return None
        return Endpoint(tuple(references), tuple(dict.fromkeys(addresses)), frozenset(hosts), tuple(networks), is_any)


def _endpoint_address(address: str) -> str:
    """Return a WinRM address in one spelling: IP addresses compressed, names in lower case."""
    text = address.strip("[]")
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        return address.lower()


def _looks_like_address(text: str) -> bool:
    return bool(re.match(r"^[0-9a-fA-F:.]+(/\d+)?$", text)) and any(ch in text for ch in ".:")


def _describe(value: Any) -> str:
    if isinstance(value, SourceMap):
        return "a mapping"
    if isinstance(value, SourceList):
        return "a list"
    if value is None:
        return "an empty value"
    return f"{type(value).__name__} {value!r}"

