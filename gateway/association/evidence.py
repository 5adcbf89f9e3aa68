"""What a call tells about who sends it: the client's device id and IP address.

* Device: the request metadata ``x-pretrade-device-id`` (the app or web front
  end sends a stable id of the device). Optional; when present it must be one
  value of 1-128 characters ``A-Z a-z 0-9 . _ : / = + -`` (else
  INVALID_ARGUMENT naming the key, like any bad input).
* IP: the connection's peer address. Behind a proxy, the gateway can be told to
  trust one header instead (``--trusted-proxy-header x-forwarded-for``): then
  the header's *last* address is used, the one the trusted proxy itself added
  (earlier ones are whatever the client sent). A call without the header is
  taken from its peer; a header that cannot be read gives no IP at all (rather
  than the proxy's own address, which every client would share).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.reasons import Denial, FieldViolation, invalid

DEVICE_METADATA_KEY = "x-pretrade-device-id"
DEVICE_RE = re.compile(r"[A-Za-z0-9._:/=+-]{1,128}")
DEVICE_RULE = "one value of 1-128 of A-Z a-z 0-9 . _ : / = + -"

Metadata = Iterable[tuple[str, str | bytes]]


@dataclass(frozen=True, slots=True)
class Evidence:
    device: str = ""
    ip: str = ""


NO_EVIDENCE = Evidence()


def read_evidence(
    metadata: Metadata | None, peer: str, trusted_header: str | None = None
) -> Evidence | Denial:
    device = ""
    forwarded: str | None = None
    for key, value in metadata or ():
        if key == DEVICE_METADATA_KEY:
            text = _text(value).strip()
            if DEVICE_RE.fullmatch(text) is None or (device and text != device):
                return invalid(FieldViolation(DEVICE_METADATA_KEY, DEVICE_RULE))
            device = text
        elif trusted_header is not None and key == trusted_header:
            forwarded = _text(value)  # a repeated header: the last one is the nearest proxy's
    ip = forwarded_ip(forwarded) if forwarded is not None else peer_ip(peer)
    return Evidence(device, ip) if device else _ip_only(ip)


@functools.lru_cache(maxsize=4096)  # most calls carry no device id: one object per address
def _ip_only(ip: str) -> Evidence:
    return Evidence("", ip) if ip else NO_EVIDENCE


@functools.lru_cache(maxsize=4096)  # a connection's calls share their peer: parse it once
def peer_ip(peer: str) -> str:
    """The address of a gRPC peer string (``ipv4:10.0.0.1:5000``, ``ipv6:[::1]:5000``,
    possibly percent-encoded), normalised; ``""`` for anything else (``unix:``...)."""
    peer = urllib.parse.unquote(peer)
    if peer.startswith("ipv4:"):
        host = peer[5:].rsplit(":", 1)[0]
    elif peer.startswith("ipv6:"):
        host = peer[5:].rsplit(":", 1)[0].strip("[]")
    else:
        return ""
    return normalize_ip(host)


@functools.lru_cache(maxsize=4096)
def forwarded_ip(header: str) -> str:
    """The last address of an ``X-Forwarded-For``-style list, normalised; ``""`` if unreadable."""
    last = header.rsplit(",", 1)[-1].strip()
    if last.startswith("[") and "]" in last:  # [v6]:port
        last = last[1 : last.index("]")]
    elif last.count(":") == 1:  # v4:port
        last = last.split(":", 1)[0]
    return normalize_ip(last)


def normalize_ip(text: str) -> str:
    """The address in canonical form (IPv4-mapped IPv6 as IPv4); ``""`` if not an address."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return ""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def _text(value: str | bytes) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value
