"""The grpc provider's configuration (``--provider-config``, JSON or YAML)::

    address: provider.example:7443      # host:port, or unix:///run/provider.sock
    ca_file: /etc/vkubelet/provider-ca.pem      # TLS: verify the provider (default: system roots)
    cert_file: /etc/vkubelet/client.pem         # mTLS: our client certificate ...
    key_file: /etc/vkubelet/client-key.pem      # ... and its key
    server_name: provider.example               # optional: the name the provider's cert has
    insecure: false                     # true: plaintext TCP (must be said explicitly)
    call_timeout: 10                    # seconds, the deadline of every unary call
    connect_timeout: 30                 # seconds to wait for the provider at startup
    reconnect_backoff_min: 0.5          # seconds, channel reconnect backoff bounds
    reconnect_backoff_max: 10
    keepalive_time: 330                 # seconds between keepalive pings on a busy connection

The keepalive default stays above the 5 minutes that gRPC servers (Go's included) enforce by
default, so no provider drops us for pinging too often; lower it only for a provider that
permits it.
A TCP address needs TLS unless ``insecure: true``; a unix socket is never encrypted (the file's
permissions protect it), so TLS keys are rejected with it. Every problem is a
:class:`GrpcConfigError` naming the file, the key and the value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from vkubelet.domain.errors import InvalidInput

_KEYS = (
    "address",
    "ca_file",
    "cert_file",
    "key_file",
    "server_name",
    "insecure",
    "call_timeout",
    "connect_timeout",
    "reconnect_backoff_min",
    "reconnect_backoff_max",
    "keepalive_time",
)


class GrpcConfigError(InvalidInput):
    """The grpc provider's configuration is unusable; the message says where and why."""


@dataclass(frozen=True, slots=True)
class GrpcProviderConfig:
    address: str
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None
    insecure: bool = False
    call_timeout: float = 10.0
    connect_timeout: float = 30.0
    reconnect_backoff_min: float = 0.5
    reconnect_backoff_max: float = 10.0
    keepalive_time: float = 330.0

    @property
    def is_unix(self) -> bool:
        return self.address.startswith("unix:")

    @property
    def uses_tls(self) -> bool:
        return not self.is_unix and not self.insecure


def load_grpc_config(path: str | os.PathLike[str] | None) -> GrpcProviderConfig:
    """Read and validate the file at ``path``. Raises GrpcConfigError."""
    if path is None or str(path) == "":
        raise GrpcConfigError(
            "--provider grpc needs --provider-config: a JSON or YAML file with at least 'address'"
        )
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GrpcConfigError(f"grpc provider config {source}: cannot read it: {exc}") from exc
    try:
        document = yaml.safe_load(text)  # YAML is a superset of JSON: both load here
    except yaml.YAMLError as exc:
        raise GrpcConfigError(f"grpc provider config {source}: not valid JSON or YAML: {exc}") from exc
    return parse_grpc_config(document, source=source)


def parse_grpc_config(document: object, *, source: str = "<config>") -> GrpcProviderConfig:
    where = f"grpc provider config {source}"
    if not isinstance(document, Mapping):
        raise GrpcConfigError(f"{where}: must be an object with at least 'address', got {document!r}")
    unknown = sorted(str(key) for key in document if key not in _KEYS)
    if unknown:
        raise GrpcConfigError(f"{where}: unknown keys {', '.join(unknown)} (known keys: {', '.join(_KEYS)})")
    address = document.get("address")
    if not isinstance(address, str) or not address.strip():
        raise GrpcConfigError(f"{where}: address must be 'host:port' or 'unix:///path', got {address!r}")
    address = address.strip()
    if address.startswith("unix:"):
        if not address.removeprefix("unix:").lstrip("/"):
            raise GrpcConfigError(f"{where}: address {address!r} has no socket path")
    else:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise GrpcConfigError(
                f"{where}: address {address!r} must be 'host:port' (port 1-65535) or 'unix:///path'"
            )
    insecure = document.get("insecure", False)
    if not isinstance(insecure, bool):
        raise GrpcConfigError(f"{where}: insecure must be true or false, got {insecure!r}")
    files = {key: _path(document, key, where) for key in ("ca_file", "cert_file", "key_file")}
    server_name = document.get("server_name")
    if server_name is not None and (not isinstance(server_name, str) or not server_name):
        raise GrpcConfigError(f"{where}: server_name must be a non-empty string, got {server_name!r}")
    tls_keys = [key for key, value in files.items() if value is not None]
    if server_name is not None:
        tls_keys.append("server_name")
    if address.startswith("unix:") and tls_keys:
        raise GrpcConfigError(f"{where}: {', '.join(tls_keys)} cannot be used with unix socket {address!r}")
    if insecure and tls_keys:
        raise GrpcConfigError(f"{where}: insecure: true contradicts {', '.join(tls_keys)}")
    if (files["cert_file"] is None) != (files["key_file"] is None):
        raise GrpcConfigError(f"{where}: cert_file and key_file go together (mTLS); one of them is missing")
    timeouts = {
        key: _seconds(document, key, default, where)
        for key, default in (
            ("call_timeout", 10.0),
            ("connect_timeout", 30.0),
            ("reconnect_backoff_min", 0.5),
            ("reconnect_backoff_max", 10.0),
            ("keepalive_time", 330.0),
        )
    }
    if timeouts["reconnect_backoff_min"] > timeouts["reconnect_backoff_max"]:
        raise GrpcConfigError(
            f"{where}: reconnect_backoff_min={timeouts['reconnect_backoff_min']:g} exceeds "
            f"reconnect_backoff_max={timeouts['reconnect_backoff_max']:g}"
        )
    return GrpcProviderConfig(
        address=address,
        ca_file=files["ca_file"],
        cert_file=files["cert_file"],
        key_file=files["key_file"],
        server_name=server_name,
        insecure=insecure,
        **timeouts,
    )


def _path(document: Mapping[str, object], key: str, where: str) -> Path | None:
    value = document.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise GrpcConfigError(f"{where}: {key} must be a file path, got {value!r}")
    path = Path(os.path.expanduser(value))
    if not path.is_file():
        raise GrpcConfigError(f"{where}: {key}={value!r} is not a readable file")
    return path


def _seconds(document: Mapping[str, object], key: str, default: float, where: str) -> float:
    value = document.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise GrpcConfigError(f"{where}: {key} must be a positive number of seconds, got {value!r}")
    return float(value)
