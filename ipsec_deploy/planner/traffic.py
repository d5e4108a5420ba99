"""Overlap tests for rule traffic selectors: addresses, protocols and ports."""

from __future__ import annotations

import ipaddress

from ..objects import ANY_ADDRESS


def parse_network(text: str):
    """Return a planned address or subnet as a network; planned rules hold no ranges or keywords."""
    return ipaddress.ip_network(text, strict=False)


def parse_address(text: str) -> list | None:
    """Return the networks an address entry stands for, or None for a keyword such as LocalSubnet.

    Windows rules also take ranges ("10.0.9.1-10.0.9.20") and keywords
    (LocalSubnet, DNS, DHCP, ...). Rules the tool plans hold only addresses
    and subnets; the other forms come from rules of other tools.
    """
    start, dash, end = text.partition("-")
    try:
        if dash:
            return list(ipaddress.summarize_address_range(ipaddress.ip_address(start.strip()), ipaddress.ip_address(end.strip())))
        return [ipaddress.ip_network(text, strict=False)]
    except (ValueError, TypeError):
        return None


def addresses_overlap(first: tuple[str, ...], second: tuple[str, ...]) -> bool:
    """Return whether two address lists may share an address; an empty list, "Any" or a keyword may be any address."""
    if not first or not second or ANY_ADDRESS in first or ANY_ADDRESS in second:
        return True
    for a in first:
        networks_a = parse_address(a)
        for b in second:
            networks_b = parse_address(b)
            if networks_a is None or networks_b is None:
                return True
            if any(x.version == y.version and x.overlaps(y) for x in networks_a for y in networks_b):
                return True
    return False


def address_covered(address, addresses: tuple[str, ...]) -> bool:
    """Return whether one IP address is inside an address list ("Any" when empty); a keyword covers nothing known."""
    if not addresses or ANY_ADDRESS in addresses:
        return True
    for text in addresses:
        networks = parse_address(text) or []
        if any(network.version == address.version and address in network for network in networks):
            return True
    return False


_PROTOCOL_NUMBERS = {"TCP": "6", "UDP": "17", "ICMPV4": "1", "ICMPV6": "58"}


def protocols_overlap(first: str, second: str) -> bool:
    if first == "Any" or second == "Any":
        return True
    return _PROTOCOL_NUMBERS.get(first.upper(), first) == _PROTOCOL_NUMBERS.get(second.upper(), second)


def _port_range(text: str) -> tuple[int, int]:
    """Return a port entry as (low, high); a keyword such as RPC or IPHTTPS may be any port."""
    low, _, high = text.partition("-")
    try:
        return int(low), int(high or low)
    except ValueError:
        return 0, 65535


def ports_overlap(first: tuple[str, ...], second: tuple[str, ...]) -> bool:
    """Return whether two port lists may share a port; an empty list is every port."""
    if not first or not second:
        return True
    for a in first:
        low_a, high_a = _port_range(a)
        for b in second:
            low_b, high_b = _port_range(b)
            if low_a <= high_b and low_b <= high_a:
                return True
    return False
