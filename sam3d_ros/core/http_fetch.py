"""http(s) downloads for request URIs, with one total deadline and an address policy.

:func:`fetch` is what :func:`sam3d_ros.core.inputs.read_uri` calls for ``http(s)://`` URIs (when
``InputOptions.allow_http`` is on). Against a slow or hostile server and server-side request
forgery:

* one **total deadline** covers name resolution, connection, TLS, redirects, headers and body (a
  timer shuts the socket down; a per-read timeout would let a 1 byte/s server hang the caller);
* **no proxies**: proxy environment variables are ignored (http.client, not urllib);
* **address policy**: every address the host resolves to must be global; loopback, private,
  link-local (cloud metadata ``169.254.169.254``), shared (``100.64/10``), multicast and reserved
  addresses are refused unless the host name or a network holding the address is in
  ``allowed_hosts``. The connection goes to the checked address (no second lookup), and the
  policy is applied again to every redirect (at most :data:`MAX_REDIRECTS`, http(s) only);
* at most ``max_bytes`` are read.

Every problem raises :class:`~sam3d_ros.core.errors.InputError` naming the field.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from sam3d_ros.core.errors import InputError

MAX_REDIRECTS = 5
"""http(s) redirects followed per download."""


@dataclass(frozen=True)
class _Limits:
    timeout_s: float
    max_bytes: int
    allowed_hosts: Sequence[str]


def _allowed_entries(entries: Sequence[str]) -> Tuple[set, list]:
    names, networks = set(), []
    for entry in entries:
        text = str(entry).strip()
        try:
            networks.append(ipaddress.ip_network(text.strip("[]"), strict=False))
        except ValueError:
            names.add(text.lower().rstrip("."))
    return names, networks


def _refusal(address: str, host: str, allowed_hosts: Sequence[str]) -> Optional[str]:
    """Why ``address`` (of ``host``) may not be reached, or ``None`` when it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_global and not ip.is_multicast:
        return None
    names, networks = _allowed_entries(allowed_hosts)
    if host.lower().rstrip(".") in names or any(ip in net for net in networks):
        return None
    if ip.is_loopback:
        kind = "a loopback"
    elif ip.is_link_local:
        kind = "a link-local (cloud metadata)"
    elif ip.is_private:
        kind = "a private"
    elif ip.is_multicast:
        kind = "a multicast"
    else:
        kind = "a non-global"
    where = f"{host} is" if host.strip("[]") == address else f"{host} resolves to {ip},"
    return (f"{where} {kind} address; allow it explicitly (http_allowed_hosts / "
            "--http-allow-host) if it is meant")


def _within(deadline: float, what: str, func: Callable[[], Any]) -> Any:
    """Run ``func`` in a helper thread, giving up at ``deadline`` (name resolution has none)."""
    box: Dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = func()
        except BaseException as exc:  # noqa: BLE001 -- handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name=what, daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if thread.is_alive():
        raise TimeoutError(what)
    if "error" in box:
        raise box["error"]
    return box["value"]


class _PinnedConnection(http.client.HTTPSConnection):
    """An http or https connection to one checked address (no proxy, no second lookup).

    The Host header and the TLS certificate check use the URL's host name.
    """

    def __init__(self, scheme: str, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._tls = scheme == "https"
        self._address = address
        self._raw: Optional[socket.socket] = None

    def connect(self) -> None:  # noqa: D102
        self._raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = (self._context.wrap_socket(self._raw, server_hostname=self.host)
                     if self._tls else self._raw)

    def abort(self) -> None:
        """Unblock a read in progress (called by the deadline timer)."""
        if self._raw is not None:
            try:
                self._raw.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _connection(url: str, field_name: str, allowed_hosts: Sequence[str], deadline: float
                ) -> Tuple[_PinnedConnection, str]:
    """Resolve the URL's host, check every address, and return an unopened connection + path."""
    parsed = urllib.parse.urlsplit(url)
    scheme = parsed.scheme.lower()
    if scheme not in ("http", "https"):
        raise InputError(field_name, f"download failed: redirect to a non-http(s) URL refused: "
                                     f"{url}")
    try:
        host, port = parsed.hostname, parsed.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise InputError(field_name, f"malformed URL {url!r}: {exc}") from None
    if not host:
        raise InputError(field_name, f"URL without a host: {url!r}")
    infos = _within(deadline, "resolve",
                    lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    addresses = [info[4][0] for info in infos]
    for address in addresses:
        reason = _refusal(address, host, allowed_hosts)
        if reason is not None:
            raise InputError(field_name, f"download refused: {reason}")
    timeout = max(deadline - time.monotonic(), 0.001)
    path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
    return _PinnedConnection(scheme, host, port, addresses[0], timeout), path


def _get_once(url: str, field_name: str, limits: "_Limits", deadline: float
              ) -> Tuple[Optional[str], bytes]:
    """One GET: ``(redirect URL, b"")`` for a redirect, else ``(None, body)``."""
    conns: List[_PinnedConnection] = []
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        for conn in conns:
            conn.abort()

    timer = threading.Timer(max(0.0, deadline - time.monotonic()), expire)
    timer.daemon = True
    timer.start()
    try:
        conn, path = _connection(url, field_name, limits.allowed_hosts, deadline)
        conns.append(conn)
        if expired.is_set():
            raise TimeoutError
        conn.request("GET", path, headers={"User-Agent": "sam3d_ros",
                                           "Accept-Encoding": "identity"})
        response = conn.getresponse()
        location = response.getheader("Location")
        if response.status in (301, 302, 303, 307, 308) and location:
            return urllib.parse.urljoin(url, location), b""
        if response.status != 200:
            raise InputError(
                field_name, f"download failed: HTTP {response.status} {response.reason}"
            )
        length = response.getheader("Content-Length")
        if length is not None and length.isdigit() and int(length) > limits.max_bytes:
            raise InputError(
                field_name, f"oversized: {length} bytes, the limit is {limits.max_bytes}"
            )
        data = bytearray()
        while len(data) <= limits.max_bytes:
            chunk = response.read1(65536)
            if not chunk:
                break
            data += chunk
        if expired.is_set():  # the deadline cut the body short
            raise TimeoutError
    except InputError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if expired.is_set() or isinstance(exc, TimeoutError) or time.monotonic() >= deadline:
            raise InputError(
                field_name, f"download did not finish within the {limits.timeout_s:g} s deadline"
            ) from None
        raise InputError(field_name, f"download failed: {exc}") from None
    finally:
        timer.cancel()
        for conn in conns:
            conn.close()
    if len(data) > limits.max_bytes:
        raise InputError(field_name, f"oversized: more than {limits.max_bytes} bytes")
    return None, bytes(data)


def fetch(url: str, field_name: str, timeout_s: float, max_bytes: int,
          allowed_hosts: Sequence[str] = ()) -> bytes:
    """Download ``url`` under the policy of the module docstring.

    Args:
        url: an ``http://`` or ``https://`` URL.
        field_name: request field named in errors.
        timeout_s: total deadline, seconds.
        max_bytes: most bytes the body may have.
        allowed_hosts: host names, addresses or networks (``"10.0.0.0/8"``) that may be reached
            although they are not global.

    Raises:
        InputError: refused address, deadline passed, HTTP error, oversized body, too many
            redirects, or a network error.
    """
    limits = _Limits(timeout_s, max_bytes, tuple(allowed_hosts))
    deadline = time.monotonic() + timeout_s
    next_url: Optional[str] = url
    for _ in range(MAX_REDIRECTS + 1):
        next_url, data = _get_once(next_url, field_name, limits, deadline)
        if next_url is None:
            return data
    raise InputError(field_name, f"download failed: more than {MAX_REDIRECTS} redirects")
