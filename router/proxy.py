"""Outbound HTTP proxies: which one a provider's requests go through, and how it is shown.

The one home of proxy rules. The config loader calls :func:`choose` once per
provider, with the environment the keys come from; the result (a :class:`Proxy`,
or None for a direct connection) is part of the provider's plan, so a reload
that changes it rebuilds the provider's connection pool. The transport only
sends through what it is given.

Where a provider's proxy comes from, in order:

1. ``proxy: none`` on the provider: never a proxy.
2. ``proxy_url_env: NAME``: the URL in that variable, for every request of the
   provider (NO_PROXY does not apply: it is the provider's own setting).
3. The standard variables, when ``proxy: env`` or ``settings.trust_env_proxies``
   (default true): ``https_proxy``/``HTTPS_PROXY`` for an https base_url,
   ``http_proxy``/``HTTP_PROXY`` for an http one (lower case first when both are
   set; ``HTTP_PROXY`` is ignored when ``REQUEST_METHOD`` is set, as under CGI a
   client's ``Proxy:`` header becomes it), unless ``no_proxy``/``NO_PROXY``
   names the host, or the host is this machine (localhost, ``*.localhost``,
   127.0.0.0/8, ::1): a proxy elsewhere would reach its own loopback, never
   this one's.

A proxy URL may carry credentials (``http://user:pass@host:port``). They are
split off here and never travel inside a URL again: the transport sends them
only as a ``Proxy-Authorization`` header, and :meth:`Proxy.display` (what logs,
errors, repr and health show) replaces them with ``[REDACTED]``.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote, urlsplit

from router.redact import REDACTED, register_secret

__all__ = ["Proxy", "ProxyURLError", "bypassed", "choose", "is_loopback", "parse_proxy"]

# The environment variables read for each upstream scheme, the first set wins.
_ENV_VARS: Final[Mapping[str, tuple[str, ...]]] = {
    "https": ("https_proxy", "HTTPS_PROXY"),
    "http": ("http_proxy", "HTTP_PROXY"),
}
_NO_PROXY_VARS: Final = ("no_proxy", "NO_PROXY")
_DEFAULT_PORTS: Final[Mapping[str, int]] = {"http": 80, "https": 443}


class ProxyURLError(ValueError):
    """A proxy URL that cannot be used. The message never quotes the URL."""


@dataclass(frozen=True, slots=True)
class Proxy:
    """A proxy to send a provider's requests through.

    Attributes:
        url: ``scheme://host:port`` of the proxy, without credentials.
        authorization: the ``Proxy-Authorization`` header value (``Basic ...``), or
            None when the URL had no credentials. Never shown; compares by value.
        source: where it came from, for messages: ``"HTTPS_PROXY"``, ``"CORP_PROXY"``...
    """

    url: str
    authorization: str | None = field(repr=False)
    source: str

    @property
    def hostport(self) -> str:
        """``host:port`` of the proxy (what messages name)."""
        parts = urlsplit(self.url)
        return parts.netloc

    def display(self) -> str:
        """The proxy as logs, errors and health show it: credentials replaced."""
        if self.authorization is None:
            return f"{self.url} (from {self.source})"
        scheme, _, rest = self.url.partition("://")
        return f"{scheme}://{REDACTED}@{rest} (from {self.source})"

    def __repr__(self) -> str:
        return f"Proxy({self.display()!r})"


def parse_proxy(value: str, source: str) -> Proxy:
    """A proxy URL from variable ``source`` checked and split into URL and credentials.

    The password (as written and percent-decoded) and the header value made from the
    credentials are registered for redaction, so that nothing printed later carries
    them. (Not the whole URL: its host and port are not secret, and messages name them.)

    Raises:
        ProxyURLError: not ``http://`` or ``https://`` with a host, or it has a path,
            query or fragment; the message names ``source``, never the value.
    """
    value = value.strip()
    try:
        parts = urlsplit(value if "://" in value else f"http://{value}")
        host = parts.hostname
        port = parts.port
    except ValueError:
        raise ProxyURLError(f"{source} does not hold a valid proxy URL") from None
    if parts.username is not None or parts.password is not None:
        for secret in (parts.password, unquote(parts.password or "")):
            if secret:
                register_secret(secret)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ProxyURLError(
            f"{source} names a {scheme}:// proxy; only http:// and https:// proxies are"
            " supported (SOCKS is not)"
        )
    if not host:
        raise ProxyURLError(f"{source} holds a proxy URL without a host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ProxyURLError(
            f"{source} holds a proxy URL with a path, query or fragment;"
            " write scheme://[user:password@]host:port"
        )
    netloc = f"[{host}]" if ":" in host else host
    url = f"{scheme}://{netloc}:{port or _DEFAULT_PORTS[scheme]}"
    authorization = None
    if parts.username is not None or parts.password is not None:
        pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode()
        register_secret(authorization.removeprefix("Basic "))
    return Proxy(url=url, authorization=authorization, source=source)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine: localhost, ``*.localhost`` or a loopback address."""
    host = host.lower().rstrip(".").strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bypassed(no_proxy: str, host: str, port: int) -> bool:
    """Whether a NO_PROXY value names ``host`` (on ``port``).

    Entries are separated by commas or spaces, case-insensitive: ``*`` (every host),
    a domain (``example.com`` or ``.example.com``: the host and every subdomain),
    an IP address, a CIDR block (``10.0.0.0/8``), any of them with ``:port``
    (only that port).
    """
    host = host.lower().rstrip(".").strip("[]")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in no_proxy.replace(",", " ").split():
        entry = raw.lower()
        if entry == "*":
            return True
        entry, entry_port = _split_port(entry)
        if entry_port is not None and entry_port != port:
            continue
        entry = entry.strip("[]").rstrip(".")
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        domain = entry.removeprefix("*").removeprefix(".")
        if domain and (host == domain or host.endswith("." + domain)):
            return True
    return False


def _split_port(entry: str) -> tuple[str, int | None]:
    """``host:port`` -> (host, port); a bare IPv6 address or CIDR keeps its colons."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest.removeprefix(":")
        return host, int(port) if port.isdigit() else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        if port.isdigit():
            return host, int(port)
    return entry, None


def _first_set(env: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str] | None:
    for name in names:
        value = (env.get(name) or "").strip()
        if value:
            return name, value
    return None


def choose(base_url: str, env: Mapping[str, str]) -> Proxy | None:
    """The proxy the standard variables in ``env`` give for requests to ``base_url``.

    None when no variable applies: none set for the scheme, NO_PROXY names the
    host, or the host is this machine.

    Raises:
        ProxyURLError: the variable that applies does not hold a usable proxy URL.
    """
    parts = urlsplit(base_url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    names = _ENV_VARS.get(scheme)
    if names is None or not host or is_loopback(host):
        return None
    if scheme == "http" and env.get("REQUEST_METHOD"):
        # Under CGI, HTTP_PROXY can be set by a client's "Proxy:" request header.
        names = names[:1]
    found = _first_set(env, names)
    if found is None:
        return None
    no_proxy = _first_set(env, _NO_PROXY_VARS)
    if no_proxy is not None and bypassed(no_proxy[1], host, parts.port or _DEFAULT_PORTS[scheme]):
        return None
    name, value = found
    return parse_proxy(value, name)
