"""Find the local IP address this machine uses to reach a host."""

from __future__ import annotations

import ipaddress
import logging
import socket

log = logging.getLogger(__name__)


def local_address_towards(address: str, port: int) -> str | None:
    """Return the local IP address the OS routes traffic to ``address`` from, or None if it cannot.

    ``address`` is a DNS name or an IP address. Connecting a UDP socket only
    selects the route and source address and sends no packet, so this is
    safe to call for any host. Each address the name resolves to is tried in
    the resolver's order.
    """
    try:
        candidates = socket.getaddrinfo(address, port, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as error:
        log.debug("failed to resolve %s: %s", address, error)
        return None

    for family, kind, protocol, _, socket_address in candidates:
        try:
            with socket.socket(family, kind, protocol) as probe:
                probe.connect(socket_address)
                local = probe.getsockname()[0]
        except OSError as error:
            log.debug("no route from this machine to %s (%s): %s", address, socket_address[0], error)
            continue
        return _normalise(local)
    return None


def _normalise(text: str) -> str:
    """Drop an IPv6 zone index and turn an IPv4-mapped IPv6 address into IPv4."""
    parsed = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)
