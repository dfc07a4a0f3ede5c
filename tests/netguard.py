"""Network guard for tests: only loopback traffic is allowed.

``install()`` patches ``socket.getaddrinfo``, ``socket.gethostbyname(_ex)`` and
``socket.socket.connect`` / ``connect_ex`` / ``sendto`` / ``sendmsg`` so that any
destination other than loopback raises :class:`NetworkGuardError` (an
``OSError``) *before* anything is sent. ``socket.create_connection`` and
everything built on it (http.client, urllib3, requests, boto3, paramiko with a
hostname) go through these functions.

Allowed:
  * 127.0.0.0/8, ::1 (also ::ffff:127.x.y.z), "localhost" and "*.localhost";
  * AF_UNIX sockets (paths, e.g. /var/run/docker.sock) and other non-IP families;
  * getaddrinfo of None / "" hosts and of the unspecified addresses
    0.0.0.0 / :: (used to bind servers, never to reach a remote host);
  * getaddrinfo of names listed in /etc/hosts (answered from the file, no DNS
    query); a connect to a non-loopback address they map to is still refused.

Every refused attempt is also appended to :data:`violations` (a list of
strings), so a test fixture can fail the test that made it even when the code
under test swallowed the exception::

    import netguard
    netguard.install()
    ...
    assert not netguard.violations, netguard.violations

The state (installed flag, originals, ``violations``, the exception class) is
kept on the ``socket`` module itself, so that this file loaded twice under
different names (``netguard`` and ``tests.netguard``, or by sitecustomize)
still shares one list and one exception class.
"""

from __future__ import annotations

import ipaddress
import socket
import types

__all__ = ["NetworkGuardError", "violations", "install", "uninstall", "is_installed", "check_address"]

_STATE_ATTR = "_vh_orch_netguard_state"


def _make_state() -> types.SimpleNamespace:
    class NetworkGuardError(OSError):
        """A test tried to reach a non-loopback network address."""

    NetworkGuardError.__module__ = __name__
    return types.SimpleNamespace(
        installed=False,
        originals={},
        violations=[],
        error=NetworkGuardError,
        hosts_names=None,
    )


_state = getattr(socket, _STATE_ATTR, None)
if _state is None:
    _state = _make_state()
    setattr(socket, _STATE_ATTR, _state)

NetworkGuardError = _state.error
violations: list[str] = _state.violations

_SOCKET_METHODS = ("connect", "connect_ex", "sendto", "sendmsg")
_ALLOWED_HELP = "tests may only reach loopback: 127.0.0.0/8, ::1, localhost, or AF_UNIX sockets"


def _refuse(what: str) -> None:
    message = f"network guard: refused {what} ({_ALLOWED_HELP})"
    _state.violations.append(message)
    raise _state.error(message)


def _as_text(host) -> str | None:
    if host is None:
        return None
    if isinstance(host, (bytes, bytearray)):
        return bytes(host).decode("ascii", "replace")
    return str(host)


def _ip(text: str):
    """The ip_address for an IP literal (scope id and brackets stripped), else None. IPv4's numeric
    shorthands that the C library takes without a DNS query (`127.1`, `2130706433`, `0x7f.1`) count."""
    text = text.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if text and all(c in "0123456789abcdefxABCDEFX." for c in text):
        try:
            return ipaddress.ip_address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def _ip_is_loopback(ip) -> bool:
    if ip.is_loopback:
        return True
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped is not None and mapped.is_loopback


def _is_localhost_name(name: str) -> bool:
    name = name.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def _etc_hosts_names() -> frozenset[str]:
    if _state.hosts_names is None:
        names: set[str] = set()
        try:
            with open("/etc/hosts", encoding="utf-8", errors="replace") as f:
                for line in f:
                    fields = line.split("#", 1)[0].split()
                    names.update(n.lower().rstrip(".") for n in fields[1:])
        except OSError:
            pass
        _state.hosts_names = frozenset(names)
    return _state.hosts_names


def _check_lookup(host, port, what: str) -> None:
    text = _as_text(host)
    if text is None or text == "":
        return
    ip = _ip(text)
    if ip is not None:
        if _ip_is_loopback(ip) or ip.is_unspecified:
            return
        _refuse(f"{what} of non-loopback address {text!r} (port {port!r})")
    if _is_localhost_name(text) or text.lower().rstrip(".") in _etc_hosts_names():
        return
    _refuse(f"{what} of {text!r} (port {port!r}): a DNS lookup")


def check_address(family, address, what: str = "connect") -> None:
    """Raise NetworkGuardError unless ``address`` (a socket address) is loopback."""
    if family not in (socket.AF_INET, socket.AF_INET6):
        return  # AF_UNIX paths, netlink, ...: not IP traffic
    if not isinstance(address, tuple) or not address:
        return  # let the real call reject a malformed address
    host = _as_text(address[0]) or ""
    port = address[1] if len(address) > 1 else None
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    ip = _ip(host)
    if ip is not None:
        if _ip_is_loopback(ip):
            return
        _refuse(f"{what} to {shown}")
    if _is_localhost_name(host):
        return
    # A hostname here would be resolved inside the C call, bypassing getaddrinfo.
    _refuse(f"{what} to {shown}: hostname is not localhost")


def install() -> None:
    """Install the guard in this process (idempotent)."""
    if _state.installed:
        return
    orig = _state.originals
    orig["getaddrinfo"] = socket.getaddrinfo
    orig["gethostbyname"] = socket.gethostbyname
    orig["gethostbyname_ex"] = socket.gethostbyname_ex
    for name in _SOCKET_METHODS:
        orig[name] = getattr(socket.socket, name)
        # connect & co. are inherited from _socket.socket: remember whether the
        # Python class defined them itself, so uninstall() can restore exactly.
        orig["own:" + name] = name in vars(socket.socket)

    def getaddrinfo(host, port, *args, **kwargs):
        _check_lookup(host, port, "getaddrinfo")
        return orig["getaddrinfo"](host, port, *args, **kwargs)

    def gethostbyname(hostname):
        _check_lookup(hostname, None, "gethostbyname")
        return orig["gethostbyname"](hostname)

    def gethostbyname_ex(hostname):
        _check_lookup(hostname, None, "gethostbyname_ex")
        return orig["gethostbyname_ex"](hostname)

    def connect(self, address):
        check_address(self.family, address, "connect")
        return orig["connect"](self, address)

    def connect_ex(self, address):
        check_address(self.family, address, "connect_ex")
        return orig["connect_ex"](self, address)

    def sendto(self, data, *args):
        # sendto(data, address) or sendto(data, flags, address)
        if args:
            check_address(self.family, args[-1], "sendto")
        return orig["sendto"](self, data, *args)

    def sendmsg(self, buffers, *args):
        # sendmsg(buffers[, ancdata[, flags[, address]]])
        if len(args) >= 3 and args[2] is not None:
            check_address(self.family, args[2], "sendmsg")
        return orig["sendmsg"](self, buffers, *args)

    for fn in (getaddrinfo, gethostbyname, gethostbyname_ex, connect, connect_ex, sendto, sendmsg):
        fn._vh_orch_netguard = True  # type: ignore[attr-defined]

    socket.getaddrinfo = getaddrinfo
    socket.gethostbyname = gethostbyname
    socket.gethostbyname_ex = gethostbyname_ex
    for name, fn in zip(_SOCKET_METHODS, (connect, connect_ex, sendto, sendmsg)):
        setattr(socket.socket, name, fn)
    _state.installed = True


def uninstall() -> None:
    """Restore the original socket functions (the recorded violations stay)."""
    if not _state.installed:
        return
    orig = _state.originals
    socket.getaddrinfo = orig["getaddrinfo"]
    socket.gethostbyname = orig["gethostbyname"]
    socket.gethostbyname_ex = orig["gethostbyname_ex"]
    for name in _SOCKET_METHODS:
        if orig["own:" + name]:
            setattr(socket.socket, name, orig[name])
        else:
            delattr(socket.socket, name)
    _state.installed = False


def is_installed() -> bool:
    return bool(_state.installed) and getattr(socket.socket.connect, "_vh_orch_netguard", False)
