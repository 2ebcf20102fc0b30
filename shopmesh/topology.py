"""The mesh topology: services, instances, sync dependencies and every port, from one file.

Port scheme (all on 127.0.0.1, offsets from ``base_port``, default 7000)::

    base + 0            nats client            base + 3   gateway admin
    base + 1            nats monitoring        base + 4   gateway listener when relocated
    base + 2            OTLP sink              base + 5   mesh-wide reflection + health
                                               base + 6..99  reserved for mesh-wide processes

    service block  = base + 100 * (position of the service in the file + 1)
    instance block = service block + 10 * (n - 1)       for instance <service>-<n>
        + 0  app gRPC       + 1  sidecar ingress       + 2  sidecar admin
        + 3 + j             sidecar egress to the j-th entry of depends_on

The gateway listener is pinned (8080, ``SHOPMESH_GATEWAY_PORT``) rather than derived, so a
developer's curl lines keep working; :meth:`Topology.relocate` moves it into the base block
for test meshes that run beside a developer's mesh. Blocks are per service and per
instance so that changing one instance count never moves another service's ports.
"""

from __future__ import annotations

import errno
import os
import random
import socket
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TOPOLOGY_FILE = REPO_ROOT / "topology.yaml"

DEFAULT_BASE_PORT = 7000
DEFAULT_GATEWAY_PORT = 8080

BASE_PORT_ENV = "SHOPMESH_BASE_PORT"
GATEWAY_PORT_ENV = "SHOPMESH_GATEWAY_PORT"
TOPOLOGY_FILE_ENV = "SHOPMESH_TOPOLOGY"

# Offsets inside the base block (mesh-wide processes).
NATS_OFFSET = 0
NATS_MONITOR_OFFSET = 1
OTLP_OFFSET = 2
GATEWAY_ADMIN_OFFSET = 3
RELOCATED_GATEWAY_OFFSET = 4
REFLECTOR_OFFSET = 5

SERVICE_STRIDE = 100
INSTANCE_STRIDE = 10
MAX_INSTANCES = SERVICE_STRIDE // INSTANCE_STRIDE
APP_OFFSET = 0
INGRESS_OFFSET = 1
SIDECAR_ADMIN_OFFSET = 2
EGRESS_OFFSET = 3
MAX_DEPENDENCIES = INSTANCE_STRIDE - EGRESS_OFFSET

LOOPBACK = "127.0.0.1"


class TopologyError(ValueError):
    """The topology file (or an override) is inconsistent."""


@dataclass(frozen=True)
class Instance:
    """One running copy of a service: ``<service>-<n>``, with its own port block."""

    service: str
    ordinal: int
    depends_on: tuple[str, ...]
    block: int  # first port of this instance's block

    @property
    def name(self) -> str:
        return f"{self.service}-{self.ordinal}"

    @property
    def app_port(self) -> int:
        return self.block + APP_OFFSET

    @property
    def app_addr(self) -> str:
        return f"{LOOPBACK}:{self.app_port}"

    @property
    def ingress_port(self) -> int:
        return self.block + INGRESS_OFFSET

    @property
    def admin_port(self) -> int:
        """The instance's sidecar Envoy admin port."""
        return self.block + SIDECAR_ADMIN_OFFSET

    def egress_port(self, dependency: str) -> int:
        """The sidecar listener this instance uses to call ``dependency``."""
        try:
            return self.block + EGRESS_OFFSET + self.depends_on.index(dependency)
        except ValueError:
            raise TopologyError(f"{self.name} does not depend on {dependency!r}") from None

    @property
    def egress_ports(self) -> dict[str, int]:
        return {dep: self.egress_port(dep) for dep in self.depends_on}

    def ports(self) -> dict[str, int]:
        """Every port of this instance, keyed ``<instance>.<role>``."""
        ports = {
            f"{self.name}.app": self.app_port,
            f"{self.name}.ingress": self.ingress_port,
            f"{self.name}.admin": self.admin_port,
        }
        ports.update({f"{self.name}.egress.{d}": p for d, p in self.egress_ports.items()})
        return ports


@dataclass(frozen=True)
class Service:
    name: str
    instances_count: int
    depends_on: tuple[str, ...]
    block: int  # first port of this service's block

    @property
    def instances(self) -> tuple[Instance, ...]:
        return tuple(
            Instance(self.name, n, self.depends_on, self.block + INSTANCE_STRIDE * (n - 1))
            for n in range(1, self.instances_count + 1)
        )

    @property
    def env_name(self) -> str:
        """Upper-case form used in environment variables (``SHOPMESH_UPSTREAM_<ENV_NAME>``)."""
        return self.name.upper().replace("-", "_")


@dataclass(frozen=True)
class Topology:
    base_port: int
    service_specs: tuple[tuple[str, int, tuple[str, ...]], ...]
    gateway_port_pin: int | None = DEFAULT_GATEWAY_PORT
    nats_jetstream: bool = True
    source: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _validate(self)

    # -- services and instances ------------------------------------------------------------

    @property
    def services(self) -> tuple[Service, ...]:
        return tuple(
            Service(name, count, deps, self.base_port + SERVICE_STRIDE * (i + 1))
            for i, (name, count, deps) in enumerate(self.service_specs)
        )

    @property
    def service_names(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self.service_specs)

    def service(self, name: str) -> Service:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise TopologyError(f"unknown service {name!r} (known: {', '.join(self.service_names)})")

    @property
    def instances(self) -> tuple[Instance, ...]:
        return tuple(inst for svc in self.services for inst in svc.instances)

    def instance(self, name: str) -> Instance:
        for inst in self.instances:
            if inst.name == name:
                return inst
        known = ", ".join(i.name for i in self.instances)
        raise TopologyError(f"unknown instance {name!r} (known: {known})")

    # -- mesh-wide ports -------------------------------------------------------------------

    @property
    def nats_port(self) -> int:
        return self.base_port + NATS_OFFSET

    @property
    def nats_monitor_port(self) -> int:
        return self.base_port + NATS_MONITOR_OFFSET

    @property
    def nats_url(self) -> str:
        return f"nats://{LOOPBACK}:{self.nats_port}"

    @property
    def otlp_port(self) -> int:
        return self.base_port + OTLP_OFFSET

    @property
    def gateway_port(self) -> int:
        if self.gateway_port_pin is not None:
            return self.gateway_port_pin
        return self.base_port + RELOCATED_GATEWAY_OFFSET

    @property
    def gateway_admin_port(self) -> int:
        return self.base_port + GATEWAY_ADMIN_OFFSET

    @property
    def reflector_port(self) -> int:
        """The mesh-wide reflection and health server behind the gateway."""
        return self.base_port + REFLECTOR_OFFSET

    def ports(self) -> dict[str, int]:
        """Every port the mesh listens on, keyed by role (``nats``, ``payment-2.app``...)."""
        ports = {
            "nats": self.nats_port,
            "nats.monitor": self.nats_monitor_port,
            "otlp": self.otlp_port,
            "gateway": self.gateway_port,
            "gateway.admin": self.gateway_admin_port,
            "reflector": self.reflector_port,
        }
        for inst in self.instances:
            ports.update(inst.ports())
        return ports

    # -- variants --------------------------------------------------------------------------

    def with_ports(self, base_port: int, gateway_port: int | None = None) -> Topology:
        """Same services at another base; ``gateway_port=None`` keeps the current pin."""
        pin = self.gateway_port_pin if gateway_port is None else gateway_port
        return replace(self, base_port=base_port, gateway_port_pin=pin)

    def relocate(self, base_port: int) -> Topology:
        """Everything, gateway listener included, inside the block at ``base_port``.

        For meshes started by tests beside a developer's mesh (which holds 8080).
        """
        return replace(self, base_port=base_port, gateway_port_pin=None)

    def with_instances(self, service: str, count: int) -> Topology:
        self.service(service)  # raises on an unknown name
        specs = tuple(
            (name, count if name == service else n, deps) for name, n, deps in self.service_specs
        )
        return replace(self, service_specs=specs)

    def only(self, *services: str) -> Topology:
        """Run just ``services`` (and their dependencies must be among them); others get zero
        instances rather than being dropped, so every port stays where it was."""
        for name in services:
            for dep in self.service(name).depends_on:
                if dep not in services:
                    raise TopologyError(f"{name} needs {dep}: include it too")
        specs = tuple(
            (name, n if name in services else 0, deps) for name, n, deps in self.service_specs
        )
        return replace(self, service_specs=specs)

    def to_dict(self) -> dict[str, Any]:
        """The file format, with the effective ports; :func:`topology_from_dict` reads it."""
        return {
            "base_port": self.base_port,
            "gateway": {"port": self.gateway_port_pin},
            "nats": {"jetstream": self.nats_jetstream},
            "services": {
                name: {"instances": count, "depends_on": list(deps)}
                for name, count, deps in self.service_specs
            },
        }


def _validate(topology: Topology) -> None:
    names = topology.service_names
    if len(set(names)) != len(names):
        raise TopologyError(f"duplicate service names in {names}")
    for name, count, deps in topology.service_specs:
        if not 0 <= count <= MAX_INSTANCES:
            raise TopologyError(f"{name}: instances must be 0..{MAX_INSTANCES}, got {count}")
        if len(deps) > MAX_DEPENDENCIES:
            raise TopologyError(f"{name}: at most {MAX_DEPENDENCIES} sync dependencies")
        if len(set(deps)) != len(deps):
            raise TopologyError(f"{name}: duplicate entries in depends_on {deps}")
        for dep in deps:
            if dep == name or dep not in names:
                raise TopologyError(f"{name}: depends_on {dep!r} is not another service")
    if names:
        top = topology.base_port + SERVICE_STRIDE * (len(names) + 1) - 1
    else:
        top = topology.base_port + SERVICE_STRIDE - 1
    if topology.base_port < 1024 or top > 65535:
        raise TopologyError(f"base_port {topology.base_port}: ports would span up to {top}")
    gw = topology.gateway_port_pin
    if gw is not None and not 1 <= gw <= 65535:
        raise TopologyError(f"gateway port {gw} out of range")
    seen: dict[int, str] = {}
    for role, port in topology.ports().items():
        if port in seen:
            raise TopologyError(f"port {port} is both {seen[port]} and {role}")
        seen[port] = role


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TopologyError(f"{what} must be an integer, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise TopologyError(f"{what} must be an integer, got {value!r}") from None


def topology_from_dict(
    data: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    source: Path | None = None,
) -> Topology:
    """Build a topology from the file format; ``environ`` overrides apply when given."""
    raw_services = data.get("services") or {}
    if not isinstance(raw_services, Mapping):
        raise TopologyError("services must be a mapping of name -> settings")
    specs: list[tuple[str, int, tuple[str, ...]]] = []
    for name, spec in raw_services.items():
        spec = spec or {}
        if not isinstance(spec, Mapping):
            raise TopologyError(f"services.{name} must be a mapping")
        deps = spec.get("depends_on") or []
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            raise TopologyError(f"services.{name}.depends_on must be a list of service names")
        count = _int(spec.get("instances", 1), f"services.{name}.instances")
        specs.append((str(name), count, tuple(deps)))

    base = _int(data.get("base_port", DEFAULT_BASE_PORT), "base_port")
    gateway = data.get("gateway") or {}
    raw_pin = gateway.get("port", DEFAULT_GATEWAY_PORT)
    pin = None if raw_pin is None else _int(raw_pin, "gateway.port")
    jetstream = bool((data.get("nats") or {}).get("jetstream", True))

    env = environ or {}
    if env.get(BASE_PORT_ENV):
        base = _int(env[BASE_PORT_ENV], BASE_PORT_ENV)
    if env.get(GATEWAY_PORT_ENV):
        pin = _int(env[GATEWAY_PORT_ENV], GATEWAY_PORT_ENV)
    return Topology(base, tuple(specs), pin, jetstream, source)


def load_topology(
    path: Path | str | None = None, *, environ: Mapping[str, str] | None = None
) -> Topology:
    """Load ``topology.yaml`` (or ``$SHOPMESH_TOPOLOGY``), applying env port overrides.

    ``environ`` defaults to ``os.environ``; pass ``{}`` to ignore the environment.
    """
    env = os.environ if environ is None else environ
    file = Path(path or env.get(TOPOLOGY_FILE_ENV) or DEFAULT_TOPOLOGY_FILE)
    data = yaml.safe_load(file.read_text())
    if not isinstance(data, Mapping):
        raise TopologyError(f"{file}: expected a mapping at the top level")
    return topology_from_dict(data, environ=env, source=file)


# -- free ports ----------------------------------------------------------------------------


def port_is_free(port: int, host: str = LOOPBACK, *, time_wait_ok: bool = False) -> bool:
    """True when nothing listens on (or holds) ``host:port``.

    By default no SO_REUSEADDR: a port in TIME_WAIT counts as busy, which only errs on the
    safe side. ``time_wait_ok`` asks "could a server bind it now": our servers (Envoy, gRPC,
    nats-server) all set SO_REUSEADDR, and a stopped mesh leaves TIME_WAIT on listener ports
    (a sidecar closing its app's connections) for a minute.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if time_wait_ok:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _default_candidates(topology: Topology) -> Iterator[int]:
    # Stay below the kernel's ephemeral range: outgoing connections grab ports there at
    # random and would collide with a listener later. Shuffled so that concurrent test runs
    # (other engineers, other sessions) rarely race for the same block.
    span = SERVICE_STRIDE * (len(topology.service_specs) + 1)
    low, _ = _ephemeral_range()
    top = min(low, 65536) - span
    bases = list(range(10000, max(top, 10001), span))
    random.shuffle(bases)
    yield from bases


def find_free_base_port(
    topology: Topology,
    candidates: Iterable[int] | None = None,
    *,
    relocate_gateway: bool = True,
) -> int:
    """A base port where every port of ``topology`` is free on 127.0.0.1.

    With ``relocate_gateway`` (the default) the gateway listener is checked at its relocated
    slot, so use the result with :meth:`Topology.relocate`; otherwise with
    :meth:`Topology.with_ports` (and the pinned gateway port must be free too).
    """
    for base in candidates if candidates is not None else _default_candidates(topology):
        try:
            moved = topology.relocate(base) if relocate_gateway else topology.with_ports(base)
        except TopologyError:
            continue
        if all(port_is_free(p) for p in moved.ports().values()):
            return base
    raise TopologyError("no base port with every derived port free on 127.0.0.1")


def free_topology(topology: Topology) -> Topology:
    """``topology`` relocated to a block where every port is free right now."""
    return topology.relocate(find_free_base_port(topology))
