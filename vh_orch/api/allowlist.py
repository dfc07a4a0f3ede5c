"""Which client addresses may read /metrics: `--metrics-allow CIDR[,CIDR...]`.

Light on purpose (the standard library only): `vh-orch serve` checks the setting before it
loads anything else, so a typo is refused at once.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from vh_orch.errors import UserInputError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_METRICS_ALLOW = "127.0.0.0/8,::1"


def parse_allow(text: str) -> tuple[Network, ...]:
    """`CIDR[,CIDR...]`; a bare address is a network of one (`::1`, `10.0.0.7`)."""
    networks = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise UserInputError(
                f"--metrics-allow {text!r}: {part!r} is not an address or a CIDR network; give "
                f"CIDR[,CIDR...], e.g. {DEFAULT_METRICS_ALLOW},10.0.0.0/8 (or set VH_ORCH_METRICS_ALLOW)") from None
    if not networks:
        raise UserInputError(f"--metrics-allow {text!r} names no address; give CIDR[,CIDR...], "
                             f"e.g. {DEFAULT_METRICS_ALLOW} (or set VH_ORCH_METRICS_ALLOW)")
    return tuple(networks)


LOOPBACK = parse_allow(DEFAULT_METRICS_ALLOW)


def is_allowed(host: str | None, allowed: Sequence[Network]) -> bool:
    """Whether a client address (as the request saw it) is in one of the networks."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:  # no peer address (a Unix socket, a test client): not an allowed one
        return False
    candidates = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)  # a dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d
    return any(a in n for a in candidates for n in allowed)
