"""What the daemon may fetch on a restricted user's behalf (an execution submitted by someone who is not an
administrator): never an address of its own networks, never an object its credentials reach unless the
operator granted it.

- HTTP(S): every connection, redirects included, goes to an address that is checked when the socket is
  opened (the name is resolved once and the checked address is the one connected to, so DNS rebinding
  cannot swap it): loopback, link-local (169.254.169.254, the clouds' metadata service, among them),
  private, shared (100.64/10), multicast, reserved and unspecified addresses are refused unless the
  operator allows a network (`serve --allow-fetch CIDR`). No proxy, netrc or other setting of the daemon's
  environment is used.
- s3:// and gs://: only what the operator granted the project (`project update --allow-bucket`), or an
  output of a project the user may see (the project's own data in the datastore).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from vh_orch.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
ALLOW_FETCH_ENV = "VH_ORCH_ALLOW_FETCH"
MAX_REDIRECTS = 5
# NAT64's well-known prefix carries an IPv4 address in its last 32 bits.
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class FetchRefused(Exception):
    """A fetch the policy does not allow; the message says what and how the operator can allow it.
    (Not an OSError: urllib3 and requests must not retry or rephrase it.)"""


def parse_networks(values: Iterable[str], source: str = "--allow-fetch") -> tuple[Network, ...]:
    """CIDRs (or single addresses), comma-separated or repeated; ConfigError naming a bad one."""
    networks: list[Network] = []
    for value in values:
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ConfigError(f"{source}: {part!r} is not a network (CIDR such as 10.20.0.0/16, or an "
                                  "address)") from None
    return tuple(networks)


def networks_from_env(environ: dict[str, str] | None = None) -> tuple[Network, ...]:
    env = os.environ if environ is None else environ
    return parse_networks([env.get(ALLOW_FETCH_ENV, "")], ALLOW_FETCH_ENV)


def _unwrapped(address: Address) -> Address:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, NAT64), else itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


@dataclass(frozen=True)
class FetchPolicy:
    """The networks the operator allows beyond the public internet."""

    allowed: tuple[Network, ...] = ()

    def refusal(self, address: str) -> str | None:
        """Why a connection to this address is refused, or None when it is allowed."""
        try:
            ip = _unwrapped(ipaddress.ip_address(address.split("%", 1)[0]))
        except ValueError:
            return f"{address!r} is not an IP address"
        if any(ip.version == net.version and ip in net for net in self.allowed):
            return None
        for kind, hit in (("a loopback", ip.is_loopback), ("a link-local", ip.is_link_local),
                          ("a multicast", ip.is_multicast), ("an unspecified", ip.is_unspecified),
                          ("a private", ip.is_private), ("a reserved", ip.is_reserved)):
            if hit:
                return f"{ip} is {kind} address"
        if not ip.is_global:
            return f"{ip} is not a public address"
        return None

    def url_refusal(self, url: str) -> str | None:
        """Why an http(s) URL is refused before anything is resolved: its host is an address (or
        localhost) the policy refuses. A name is checked when the fetch connects."""
        from urllib.parse import urlparse

        try:
            host = (urlparse(url).hostname or "").lower()
        except ValueError:
            return "its address is malformed"
        if host == "localhost" or host.endswith(".localhost"):
            host = "127.0.0.1"
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return None
        return self.refusal(host)

    def connect(self, host: str, port: int, timeout: Any, source_address: Any = None,
                socket_options: Sequence[tuple[int, int, Any]] | None = None) -> socket.socket:
        """A socket connected to an allowed address of host:port (resolved here, once), or FetchRefused."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise OSError(f"cannot resolve {host}: {exc.strerror}") from None
        refused = []
        last_error: OSError | None = None
        for family, kind, proto, _name, sockaddr in infos:
            why = self.refusal(str(sockaddr[0]))
            if why is not None:
                refused.append(why)
                continue
            sock = socket.socket(family, kind, proto)
            try:
                for level, option, value in socket_options or ():
                    sock.setsockopt(level, option, value)
                if isinstance(timeout, (int, float)):  # else urllib3's "default" sentinel, or None
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                sock.close()
                last_error = exc
        if last_error is not None:
            raise last_error
        raise FetchRefused(f"{host} is not fetched: {'; '.join(sorted(set(refused))) or 'it has no address'} "
                           f"(the daemon's own networks are closed to executions submitted through the API; an "
                           f"operator can allow a network with `vh-orch serve --allow-fetch CIDR`)")


def guarded_session(policy: FetchPolicy) -> Any:
    """A requests session whose every connection (redirects included) goes through policy.connect, and
    that uses nothing from the daemon's environment (proxies, netrc, CA bundle variables)."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    def new_conn(self: Any) -> socket.socket:
        try:
            return policy.connect(self._dns_host, self.port, self.timeout, self.source_address,
                                  self.socket_options)
        except FetchRefused:
            raise
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"connection to {self.host} timed out") from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc

    http_conn = type("GuardedHTTPConnection", (HTTPConnection,), {"_new_conn": new_conn})
    https_conn = type("GuardedHTTPSConnection", (HTTPSConnection,), {"_new_conn": new_conn})
    http_pool = type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn})
    https_pool = type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn})

    class GuardedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": http_pool, "https": https_pool}

        def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
            raise FetchRefused("a proxy is never used for an execution's inputs")

    session = requests.Session()
    session.trust_env = False
    session.max_redirects = MAX_REDIRECTS
    session.mount("http://", GuardedAdapter())
    session.mount("https://", GuardedAdapter())
    return session


# -- buckets ----------------------------------------------------------------------------------------


def normalise_grant(location: str, option: str = "--allow-bucket") -> str:
    """`s3://bucket` or `s3://bucket/prefix` (gs:// alike), without a trailing slash; ConfigError otherwise."""
    text = location.strip()
    scheme, sep, rest = text.partition("://")
    bucket = rest.split("/", 1)[0]
    if scheme not in ("s3", "gs") or not sep or not bucket or any(c.isspace() for c in text) or "\0" in text:
        raise ConfigError(f"{option} {location!r}: give s3://BUCKET[/PREFIX] or gs://BUCKET[/PREFIX]")
    return text.rstrip("/")


def granted(uri: str, grants: Iterable[str]) -> bool:
    """Whether an s3:// or gs:// object is inside one of the grants: the whole bucket, or a prefix taken as
    a folder (`s3://b/data` grants `s3://b/data/x`, never `s3://b/database/x`)."""
    return any(uri == grant or uri.startswith(grant + "/") for grant in grants)
