"""Address, protocol and port conditions of rules: validation, matching and specificity."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Keywords New-NetIPsecRule accepts for -LocalAddress/-RemoteAddress.
ADDRESS_KEYWORDS = (
    "Any", "LocalSubnet", "LocalSubnet4", "LocalSubnet6", "DNS", "DNS4", "DNS6", "DHCP", "DHCP4",
    "DHCP6", "WINS", "WINS4", "WINS6", "DefaultGateway", "DefaultGateway4", "DefaultGateway6",
    "Internet", "Intranet", "IntranetRemoteAccess", "PlayToDevice",
)
PROTOCOL_NAMES = {"any": "Any", "tcp": "TCP", "udp": "UDP", "icmpv4": "ICMPv4", "icmpv6": "ICMPv6"}
PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "ICMPv4": 1, "ICMPv6": 58}
PORT_KEYWORDS = ("Any", "RPC", "RPCEPMap", "IPHTTPS", "IPHTTPSIn", "IPHTTPSOut", "Teredo",
                 "PlayToDiscovery", "mDNS")

ADDRESS_ERROR = (
    "The address is invalid. Addresses may be specified as IP addresses, ranges, or subnets. "
    "Also, the following address keywords are allowed in certain places: LocalSubnet, DNS, DHCP, "
    "WINS, DefaultGateway, Internet, Intranet, IntranetRemoteAccess, PlayToDevice. Keywords can be "
    "restricted to IPv4 or IPv6 by appending a 4 or 6 (for example, DNS4)."
)


@dataclass(frozen=True)
class AddressRange:
    first: IPAddress
    last: IPAddress

    def contains(self, address: IPAddress) -> bool:
        return (self.first.version == address.version) and self.first <= address <= self.last

    @property
    def size(self) -> int:
        return int(self.last) - int(self.first) + 1


def normalize_address(text: str) -> str | None:
    """Return the address in the form Windows shows it, or None when it is invalid."""
    text = text.strip()
    for keyword in ADDRESS_KEYWORDS:
        if text.lower() == keyword.lower():
            return keyword
    try:
        if "-" in text:
            first, last = (ipaddress.ip_address(p.strip()) for p in text.split("-", 1))
            if first.version != last.version or first > last:
                return None
            return f"{first}-{last}"
        if "/" in text:
            network = ipaddress.ip_network(text, strict=False)
            if network.num_addresses == 1:
                return str(network.network_address)
            return str(network)
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def address_range(entry: str) -> AddressRange | None:
    """Return the range an explicit address entry covers; None for a keyword."""
    if entry in ADDRESS_KEYWORDS:
        return None
    if "-" in entry:
        first, last = (ipaddress.ip_address(p) for p in entry.split("-", 1))
        return AddressRange(first, last)
    if "/" in entry:
        network = ipaddress.ip_network(entry, strict=False)
        return AddressRange(network.network_address, network.broadcast_address)
    address = ipaddress.ip_address(entry)
    return AddressRange(address, address)


def address_matches(entries: list[str], address: str, same_subnet: bool = False) -> bool:
    """Tell whether ``address`` falls under any entry.

    NOTE: of the keywords only Any and LocalSubnet are modelled; LocalSubnet
    means "the peer is on one of the host's /24 networks" (``same_subnet``).
    Other keywords match nothing.
    """
    ip = ipaddress.ip_address(address)
    for entry in entries:
        if entry == "Any":
            return True
        if entry.startswith("LocalSubnet"):
            if same_subnet:
                return True
            continue
        covered = address_range(entry)
        if covered is not None and covered.contains(ip):
            return True
    return False


def address_scope(entries: list[str]) -> int:
    """Return how many addresses the entries cover (smaller is more specific)."""
    total = 0
    for entry in entries:
        if entry == "Any":
            return 2**128
        covered = address_range(entry)
        total += covered.size if covered is not None else 2**32
    return total


def normalize_protocol(text: str) -> str | None:
    text = text.strip()
    if text.lower() in PROTOCOL_NAMES:
        return PROTOCOL_NAMES[text.lower()]
    if text.isdigit() and 0 <= int(text) <= 255:
        number = int(text)
        for name, value in PROTOCOL_NUMBERS.items():
            if value == number:
                return name
        return str(number)
    return None


def normalize_port(text: str) -> str | None:
    text = text.strip()
    for keyword in PORT_KEYWORDS:
        if text.lower() == keyword.lower():
            return keyword
    parts = text.split("-")
    if len(parts) > 2 or not all(p.strip().isdigit() for p in parts):
        return None
    numbers = [int(p) for p in parts]
    if not all(0 <= n <= 65535 for n in numbers) or (len(numbers) == 2 and numbers[0] > numbers[1]):
        return None
    return "-".join(str(n) for n in numbers)


def port_matches(entries: list[str], port: int | None) -> bool:
    """Tell whether ``port`` matches; a rule with ports never matches portless traffic (ICMP)."""
    if "Any" in entries:
        return True
    if port is None:
        return False
    for entry in entries:
        if entry in PORT_KEYWORDS:
            continue
        low, _, high = entry.partition("-")
        if int(low) <= port <= int(high or low):
            return True
    return False


def port_scope(entries: list[str]) -> int:
    if "Any" in entries:
        return 65536
    total = 0
    for entry in entries:
        if entry in PORT_KEYWORDS:
            total += 1024
            continue
        low, _, high = entry.partition("-")
        total += int(high or low) - int(low) + 1
    return total


def protocol_matches(rule_protocol: str, protocol: str) -> bool:
    return rule_protocol == "Any" or rule_protocol.lower() == protocol.lower()


def same_slash24(first: str, second: str) -> bool:
    a, b = ipaddress.ip_address(first), ipaddress.ip_address(second)
    if a.version != b.version:
        return False
    prefix = 24 if a.version == 4 else 64
    return ipaddress.ip_network(f"{a}/{prefix}", strict=False) == ipaddress.ip_network(f"{b}/{prefix}", strict=False)
