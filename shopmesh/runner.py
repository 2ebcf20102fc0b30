"""The local process runner: supervisord programs generated from the topology.

Every process the mesh needs (nats-server, one program per service instance, the Envoy
gateway with the mesh-wide reflector, one Envoy sidecar per instance; later the OTLP sink)
is a :class:`Program`, built from
the topology by a list of builder functions (:data:`PROGRAM_BUILDERS`). The programs are
rendered into ``<var>/run/supervisord.conf`` and supervised by a daemonised supervisord that
this module drives over XML-RPC on a unix socket under ``<var>/run``.

Nothing restarts on its own (``autorestart=false``): a crash must show up in ``status()`` and
in ``wait_ready()``, not be papered over.

Manual debugging: ``supervisorctl -c var/run/supervisord.conf status``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import psutil

from shopmesh.envoy import render as envoy
from shopmesh.envoy.layout import REFLECTOR, Layout, MeshPlan
from shopmesh.envoy.settings import OTLP_TARGET_ENV, Settings
from shopmesh.probes import GrpcHealthProbe, HttpProbe, Probe, TcpProbe
from shopmesh.topology import (
    LOOPBACK,
    REPO_ROOT,
    Instance,
    Topology,
    port_is_free,
    topology_from_dict,
)

VAR_ENV = "SHOPMESH_VAR"

# Start order (supervisord stops in reverse): the bus first, services after it.
PRIORITY = {
    "nats": 10,
    "otlp": 20,
    "service": 100,
    "sidecar": 200,
    "reflector": 250,
    "gateway": 300,
}

# Variables the runner sets per program; stale values in the caller's environment must
# not leak into children through supervisord's inherited environment.
_CONTRACT_VARS = (
    "SHOPMESH_SERVICE",
    "SHOPMESH_INSTANCE",
    "SHOPMESH_GRPC_ADDR",
    "SHOPMESH_VAR",
    "SHOPMESH_NATS_URL",
)
_UPSTREAM_PREFIX = "SHOPMESH_UPSTREAM_"

CRASHED_STATES = frozenset({"FATAL", "EXITED", "BACKOFF", "UNKNOWN"})


class MeshError(RuntimeError):
    """Base class for runner errors; the message is meant for a human."""


class MeshNotRunning(MeshError):
    pass


class MeshAlreadyRunning(MeshError):
    pass


class MeshNotReady(MeshError):
    pass


class PortsBusy(MeshError):
    pass


# -- the var directory ------------------------------------------------------------------------


def default_var_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get(VAR_ENV) or REPO_ROOT / "var")


@dataclass(frozen=True)
class VarDir:
    """Where a run keeps its state: ``run/`` (conf, socket, pid), ``log/``, ``data/``, ..."""

    root: Path

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def nats(self) -> Path:
        return self.root / "nats"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def conf(self) -> Path:
        return self.run / "supervisord.conf"

    @property
    def pidfile(self) -> Path:
        return self.run / "supervisord.pid"

    @property
    def state_file(self) -> Path:
        return self.run / "mesh.json"

    @property
    def socket(self) -> Path:
        path = self.run / "supervisor.sock"
        # sun_path holds 108 bytes; deep tmp dirs overflow it, so fall back to /tmp.
        if len(str(path)) < 100:
            return path
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:16]
        return Path("/tmp") / f"shopmesh-{digest}.sock"

    def log_file(self, program: str) -> Path:
        return self.log / f"{program}.log"

    def make(self) -> None:
        for path in (self.run, self.log, self.data, self.keys, self.nats, self.pki):
            path.mkdir(parents=True, exist_ok=True)


# -- the service process contract ----------------------------------------------------------


def upstream_addr(
    topology: Topology,
    instance: Instance,
    dependency: str,
    *,
    via_sidecar: bool = False,
) -> str:
    """``host:port`` that ``instance`` dials to reach ``dependency``: its sidecar's egress
    listener in the Envoy mesh, else the dependency's first instance directly."""
    if via_sidecar:
        return f"{LOOPBACK}:{instance.egress_port(dependency)}"
    targets = topology.service(dependency).instances
    if not targets:
        raise MeshError(f"{instance.name} depends on {dependency}, which has no instances")
    return targets[0].app_addr


def service_env(
    topology: Topology,
    instance: Instance,
    var_dir: Path,
    *,
    via_sidecar: bool = False,
) -> dict[str, str]:
    """The environment contract of one service instance.

    Children also inherit the caller's environment through supervisord (minus stale
    contract variables), which is how ``SHOPMESH_<SERVICE>_DB`` passes through.
    """
    env = {
        "SHOPMESH_SERVICE": instance.service,
        "SHOPMESH_INSTANCE": instance.name,
        "SHOPMESH_GRPC_ADDR": instance.app_addr,
        "SHOPMESH_VAR": str(var_dir),
        "SHOPMESH_NATS_URL": topology.nats_url,
    }
    for dep in instance.depends_on:
        key = _UPSTREAM_PREFIX + topology.service(dep).env_name
        env[key] = upstream_addr(topology, instance, dep, via_sidecar=via_sidecar)
    return env


def supervisord_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment supervisord (and so every child) inherits."""
    source = os.environ if environ is None else environ
    env = {
        k: v
        for k, v in source.items()
        if k not in _CONTRACT_VARS and not k.startswith(_UPSTREAM_PREFIX)
    }
    # Children talk to 127.0.0.1 only; a proxy from the caller's shell must not catch that.
    for key in ("no_proxy", "NO_PROXY"):
        parts = [p for p in env.get(key, "").split(",") if p]
        env[key] = ",".join([*parts, *(h for h in (LOOPBACK, "localhost") if h not in parts)])
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"  # logs reach the files (and `shopmesh up`) at once
    return env


# -- programs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Program:
    """One supervised process. ``env`` is added to supervisord's inherited environment."""

    name: str
    kind: str
    command: tuple[str, ...]
    log: Path
    directory: Path = REPO_ROOT
    env: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, int] = field(default_factory=dict)  # role -> port, first = main
    probes: tuple[Probe, ...] = ()
    priority: int = 100
    start_secs: int = 1  # alive this long = started; an earlier exit is FATAL
    stop_wait_secs: int = 10  # grace between TERM and KILL

    @property
    def address(self) -> str | None:
        return f"{LOOPBACK}:{next(iter(self.ports.values()))}" if self.ports else None


@dataclass(frozen=True)
class Unavailable:
    """A program the topology wants but that cannot start yet (e.g. unwritten service)."""

    name: str
    kind: str
    reason: str


@dataclass(frozen=True)
class RunContext:
    topology: Topology
    var: VarDir
    repo_root: Path
    python: str
    environ: Mapping[str, str]


ProgramBuilder = Callable[[RunContext], Iterable[Program | Unavailable]]


def _binary(name: str) -> str:
    # Prefer the venv's copy (the pinned wheel) over anything else on PATH.
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise MeshError(f"{name} not found; run ./dev to install the toolchain")
    return found


def nats_programs(ctx: RunContext) -> Iterator[Program]:
    topo = ctx.topology
    command = [
        _binary("nats-server"),
        "-a",
        LOOPBACK,
        "-p",
        str(topo.nats_port),
        "-m",
        str(topo.nats_monitor_port),
        "-n",
        f"shopmesh-{topo.nats_port}",
    ]
    if topo.nats_jetstream:
        command += ["-js", "-sd", str(ctx.var.nats)]
    yield Program(
        name="nats",
        kind="nats",
        command=tuple(command),
        log=ctx.var.log_file("nats"),
        directory=ctx.var.root,
        ports={"client": topo.nats_port, "monitor": topo.nats_monitor_port},
        # /healthz also covers JetStream when it is enabled.
        probes=(TcpProbe(topo.nats_port), HttpProbe(topo.nats_monitor_port, "/healthz")),
        priority=PRIORITY["nats"],
    )


def _entry(ctx: RunContext, service: str) -> Path:
    return ctx.repo_root / "services" / service / "__main__.py"


def mesh_plan(ctx: RunContext) -> MeshPlan:
    """The instances behind Envoy sidecars: those that can start and have a contract."""
    return MeshPlan.of(ctx.topology, lambda inst: _entry(ctx, inst.service).exists())


def service_programs(ctx: RunContext) -> Iterator[Program | Unavailable]:
    plan = mesh_plan(ctx)
    for svc in ctx.topology.services:
        entry = _entry(ctx, svc.name)
        for inst in svc.instances:
            if not entry.exists():
                reason = f"{entry.relative_to(ctx.repo_root)} does not exist yet"
                yield Unavailable(inst.name, "service", reason)
                continue
            yield Program(
                name=inst.name,
                kind="service",
                command=(ctx.python, "-m", f"services.{svc.name}"),
                log=ctx.var.log_file(inst.name),
                directory=ctx.repo_root,
                env={
                    **service_env(
                        ctx.topology, inst, ctx.var.root, via_sidecar=plan.has_sidecar(inst)
                    ),
                    **otlp_env(ctx),
                },
                ports={"grpc": inst.app_port},
                probes=(GrpcHealthProbe(inst.app_port),),
                priority=PRIORITY["service"],
            )


def envoy_programs(ctx: RunContext) -> Iterator[Program]:
    """A sidecar per meshed instance and the gateway; configs come from :func:`prepare`."""
    for proc in envoy.processes(mesh_plan(ctx), Layout(ctx.var.root)):
        yield Program(
            name=proc.name,
            kind=proc.kind,
            command=proc.command(ctx.python),
            log=ctx.var.log_file(proc.name),
            directory=ctx.var.root,
            ports=proc.ports,
            probes=(HttpProbe(proc.admin_port, "/ready"),),
            priority=PRIORITY[proc.kind],
        )


def reflector_programs(ctx: RunContext) -> Iterator[Program]:
    """Reflection and health for every service behind the gateway (shopmesh.reflector)."""
    plan = mesh_plan(ctx)
    if not plan.has_gateway:
        return
    port = ctx.topology.reflector_port
    services = [
        f"--service={s}=" + ",".join(i.app_addr for i in plan.instances_of(s))
        for s in plan.services
    ]
    yield Program(
        name=REFLECTOR,
        kind="reflector",
        command=(ctx.python, "-m", "shopmesh.reflector", f"--listen={LOOPBACK}:{port}", *services),
        log=ctx.var.log_file(REFLECTOR),
        directory=ctx.repo_root,
        ports={"grpc": port},
        probes=(GrpcHealthProbe(port),),
        priority=PRIORITY["reflector"],
    )


def prepare(ctx: RunContext) -> None:
    """Files the programs need before they start: certificates and Envoy configs."""
    settings = Settings.from_env(ctx.environ)
    envoy.prepare(mesh_plan(ctx), Layout(ctx.var.root), settings)


TRACESINK = "tracesink"


def otlp_env(ctx: RunContext) -> dict[str, str]:
    """Where services export: a collector named by SHOPMESH_OTLP_TARGET, else the sink."""
    target = ctx.environ.get(OTLP_TARGET_ENV)
    if not target:
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{LOOPBACK}:{ctx.topology.otlp_port}"}
    # The documented collector is Jaeger, which takes traces but not metrics.
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{target}", "OTEL_METRICS_EXPORTER": "none"}


def tracesink_programs(ctx: RunContext) -> Iterator[Program]:
    """The local OTLP receiver every service and Envoy export to (shopmesh.tracesink)."""
    exporters = [i for i in ctx.topology.instances if _entry(ctx, i.service).exists()]
    if ctx.environ.get(OTLP_TARGET_ENV) or not exporters:
        return  # spans go to the collector the user named instead, or nothing exports
    port = ctx.topology.otlp_port
    yield Program(
        name=TRACESINK,
        kind="otlp",
        command=(
            ctx.python,
            "-m",
            "shopmesh.tracesink",
            f"--port={port}",
            f"--dir={ctx.var.root / 'traces'}",
        ),
        log=ctx.var.log_file(TRACESINK),
        directory=ctx.var.root,
        ports={"grpc": port},
        probes=(GrpcHealthProbe(port),),
        priority=PRIORITY["otlp"],
    )


PROGRAM_BUILDERS: tuple[ProgramBuilder, ...] = (
    nats_programs,
    tracesink_programs,
    service_programs,
    envoy_programs,
    reflector_programs,
)


def build_programs(
    ctx: RunContext, builders: Sequence[ProgramBuilder] = PROGRAM_BUILDERS
) -> tuple[list[Program], list[Unavailable]]:
    programs: list[Program] = []
    unavailable: list[Unavailable] = []
    for builder in builders:
        for item in builder(ctx):
            if isinstance(item, Program):
                programs.append(item)
            else:
                unavailable.append(item)
    names = [p.name for p in programs]
    if len(set(names)) != len(names):
        raise MeshError(f"duplicate program names: {names}")
    return programs, unavailable


# -- supervisord.conf ----------------------------------------------------------------------


def _conf_value(value: str) -> str:
    # supervisord expands %(name)s in values: a literal % must be doubled.
    return value.replace("%", "%%")


def _conf_env(env: Mapping[str, str]) -> str:
    # supervisord splits environment= with a non-POSIX shlex: no escapes, a value can be
    # quoted with " or ' but not contain both, and quote characters at its ends are lost.
    # Only the runner's own values go here; the caller's variables (secrets, URLs with
    # %-escapes) reach children through supervisord's inherited environment instead.
    def quote(key: str, value: str) -> str:
        for q in ('"', "'"):
            if (
                q not in value
                and not value.startswith(("'", '"'))
                and not value.endswith(("'", '"'))
            ):
                return q + _conf_value(value) + q
        raise MeshError(f"{key}={value!r} cannot be written to supervisord.conf")

    return ",".join(f"{k}={quote(k, v)}" for k, v in env.items())


def render_supervisord_conf(programs: Sequence[Program], var: VarDir) -> str:
    lines = [
        "; Generated by shopmesh.runner from topology.yaml; do not edit.",
        "[unix_http_server]",
        f"file={_conf_value(str(var.socket))}",
        "chmod=0700",
        "",
        "[supervisord]",
        f"logfile={_conf_value(str(var.log_file('supervisord')))}",
        "logfile_maxbytes=10MB",
        "logfile_backups=2",
        f"pidfile={_conf_value(str(var.pidfile))}",
        f"childlogdir={_conf_value(str(var.log))}",
        f"directory={_conf_value(str(var.root))}",
        f"identifier=shopmesh-{hashlib.sha256(str(var.root).encode()).hexdigest()[:12]}",
        "nodaemon=false",
        "loglevel=info",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{_conf_value(str(var.socket))}",
        "",
    ]
    for p in programs:
        lines += [
            f"[program:{p.name}]",
            f"command={_conf_value(shlex.join(p.command))}",
            f"directory={_conf_value(str(p.directory))}",
            f"priority={p.priority}",
            "autostart=true",
            "autorestart=false",
            f"startsecs={p.start_secs}",
            "startretries=0",
            "stopsignal=TERM",
            f"stopwaitsecs={p.stop_wait_secs}",
            # Signal the whole process group so no grandchild outlives its program.
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={_conf_value(str(p.log))}",
            "stdout_logfile_maxbytes=20MB",
            "stdout_logfile_backups=2",
        ]
        if p.env:
            lines.append(f"environment={_conf_env(p.env)}")
        lines.append("")
    return "\n".join(lines)


# -- XML-RPC over the unix socket ------------------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    """supervisor's own transport has no timeout; a hung supervisord must not hang us."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__()
        self._path = str(path)
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixConnection(self._path, self._timeout)


def _rpc(var: VarDir, timeout: float = 5.0) -> Any:
    return xmlrpc.client.ServerProxy(
        "http://localhost", transport=_UnixTransport(var.socket, timeout)
    ).supervisor


# -- status ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProgramStatus:
    name: str
    kind: str
    state: str  # supervisor's statename, or UNAVAILABLE
    pid: int | None
    uptime: float | None  # seconds, while running
    ports: Mapping[str, int]
    description: str
    log: Path | None

    @property
    def crashed(self) -> bool:
        return self.state in CRASHED_STATES

    @property
    def address(self) -> str | None:
        return f"{LOOPBACK}:{next(iter(self.ports.values()))}" if self.ports else None


def tail(path: Path, lines: int = 20) -> list[str]:
    """The last ``lines`` lines of a text file (empty if it does not exist)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()[-lines:]


class LogFollower:
    """Polls log files for new lines; survives files that appear late or get rotated."""

    def __init__(self, paths: Mapping[str, Path], *, from_start: bool = False) -> None:
        self._paths = dict(paths)
        self._offsets: dict[str, int] = {}
        self._inodes: dict[str, int] = {}
        self._partial: dict[str, bytes] = {}
        if not from_start:
            for name, path in self._paths.items():
                with contextlib.suppress(OSError):
                    st = path.stat()
                    self._offsets[name], self._inodes[name] = st.st_size, st.st_ino

    def poll(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for name, path in self._paths.items():
            try:
                st = path.stat()
            except OSError:
                continue
            offset = self._offsets.get(name, 0)
            if self._inodes.get(name, st.st_ino) != st.st_ino or st.st_size < offset:
                offset = 0  # rotated or truncated: start over on the new file
                self._partial.pop(name, None)
            if st.st_size == offset:
                self._inodes[name] = st.st_ino
                continue
            with path.open("rb") as f:
                f.seek(offset)
                data = self._partial.pop(name, b"") + f.read()
                self._offsets[name] = f.tell()
            self._inodes[name] = st.st_ino
            *complete, rest = data.split(b"\n")
            if rest:
                self._partial[name] = rest
            out += [(name, line.decode(errors="replace")) for line in complete]
        return out


# -- the mesh --------------------------------------------------------------------------------


def _holder(port: int) -> str:
    """Who listens on ``port``, best effort (needs privileges on some systems)."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections("tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                if conn.pid is None:
                    return ""
                proc = psutil.Process(conn.pid)
                return f" (held by pid {conn.pid} {proc.name()})"
    return ""


class Mesh:
    """The local mesh for one topology and one var directory.

    ``with Mesh(topology, var) as mesh: mesh.wait_ready()`` starts everything that can start
    and stops it all (no process left behind) on the way out.
    """

    def __init__(
        self,
        topology: Topology,
        var_dir: Path | str | None = None,
        *,
        repo_root: Path = REPO_ROOT,
        builders: Sequence[ProgramBuilder] = PROGRAM_BUILDERS,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.topology = topology
        self.repo_root = repo_root  # where services/<name> are looked up
        self.var = VarDir(Path(var_dir).resolve() if var_dir else default_var_dir(environ))
        self.environ: Mapping[str, str] = dict(os.environ if environ is None else environ)
        self._ctx = RunContext(topology, self.var, repo_root, sys.executable, self.environ)
        self.programs, self.unavailable = build_programs(self._ctx, builders)

    @classmethod
    def attach(cls, var_dir: Path | str | None = None) -> Mesh:
        """The mesh last started from ``var_dir`` (its topology and ports as started)."""
        var = VarDir(Path(var_dir).resolve() if var_dir else default_var_dir())
        try:
            state = json.loads(var.state_file.read_text())
        except (OSError, ValueError):
            raise MeshNotRunning(f"no mesh was started from {var.root}") from None
        mesh = cls(topology_from_dict(state["topology"]), var.root, repo_root=Path(state["repo"]))
        mesh.unavailable = [Unavailable(**u) for u in state["unavailable"]]
        return mesh

    def program(self, name: str) -> Program:
        for p in self.programs:
            if p.name == name:
                return p
        raise MeshError(f"no program {name!r} (have: {', '.join(p.name for p in self.programs)})")

    # -- lifecycle ---------------------------------------------------------------------------

    def is_running(self) -> bool:
        try:
            return cast(str, _rpc(self.var, 2.0).getState()["statename"]) == "RUNNING"
        except (OSError, xmlrpc.client.Error, http.client.HTTPException):
            return False

    def start(self, timeout: float = 15.0) -> None:
        """Start supervisord (daemonised) and with it every available program.

        Returns once supervisord answers; use :meth:`wait_ready` for the programs.
        """
        if self.is_running():
            raise MeshAlreadyRunning(
                f"a mesh is already running from {self.var.root}; stop it first (shopmesh stop)"
            )
        self._kill_leftovers()  # a previous run that died without stopping
        self.var.make()
        busy = [
            f"{p.name}.{role} {port}{_holder(port)}"
            for p in self.programs
            for role, port in p.ports.items()
            if not port_is_free(port, time_wait_ok=True)  # a restart right after a stop
        ]
        if busy:
            raise PortsBusy(
                "ports already in use on 127.0.0.1: "
                + ", ".join(busy)
                + " (another mesh? set SHOPMESH_BASE_PORT to move this one)"
            )
        if any(p.kind in ("sidecar", "gateway") for p in self.programs):
            prepare(self._ctx)
        self.var.conf.write_text(render_supervisord_conf(self.programs, self.var))
        self.var.state_file.write_text(
            json.dumps(
                {
                    "topology": self.topology.to_dict(),
                    "repo": str(self.repo_root),
                    "unavailable": [u.__dict__ for u in self.unavailable],
                },
                indent=2,
            )
        )
        with contextlib.suppress(FileNotFoundError):
            self.var.socket.unlink()
        proc = subprocess.run(
            [_binary("supervisord"), "-c", str(self.var.conf)],
            env=supervisord_env(self.environ),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise MeshError(f"supervisord failed to start: {proc.stderr.strip() or proc.stdout}")
        deadline = time.monotonic() + timeout
        while not self.is_running():
            if time.monotonic() > deadline:
                log = "\n".join(tail(self.var.log_file("supervisord")))
                self.stop()
                raise MeshError(f"supervisord did not come up within {timeout:.0f}s:\n{log}")
            time.sleep(0.05)

    def start_program(self, name: str) -> None:
        """Start one stopped or crashed program (waits for supervisord's startsecs)."""
        self.program(name)
        _rpc(self.var, 30.0).startProcess(name, True)

    def stop_program(self, name: str) -> None:
        """Stop one program the way `shopmesh stop` would (SIGTERM, then the grace)."""
        self.program(name)
        _rpc(self.var, 60.0).stopProcess(name, True)

    def status(self) -> list[ProgramStatus]:
        """Every program (supervised or unavailable) with its state."""
        try:
            infos = cast(list[dict[str, Any]], _rpc(self.var).getAllProcessInfo())
        except (OSError, xmlrpc.client.Error, http.client.HTTPException) as exc:
            raise MeshNotRunning(f"no mesh running from {self.var.root} ({exc})") from None
        known = {p.name: p for p in self.programs}
        out: list[ProgramStatus] = []
        for info in infos:
            prog = known.get(info["name"])
            running = info["statename"] == "RUNNING"
            out.append(
                ProgramStatus(
                    name=info["name"],
                    kind=prog.kind if prog else "?",
                    state=info["statename"],
                    pid=info["pid"] or None,
                    uptime=float(info["now"] - info["start"]) if running else None,
                    ports=dict(prog.ports) if prog else {},
                    description=info["description"],
                    log=prog.log if prog else None,
                )
            )
        order = {p.name: i for i, p in enumerate(self.programs)}
        out.sort(key=lambda s: order.get(s.name, len(order)))
        out += [
            ProgramStatus(u.name, u.kind, "UNAVAILABLE", None, None, {}, u.reason, None)
            for u in self.unavailable
        ]
        return out

    def probe(self) -> dict[str, str | None]:
        """Run every program's readiness probes now: name -> None (ready) or the reason."""
        return {p.name: _first_failure(p) for p in self.programs}

    def wait_ready(self, timeout: float = 60.0, poll: float = 0.2) -> None:
        """Block until every supervised program is RUNNING and passes its probes.

        Raises :class:`MeshNotReady` at once when a program exits or is FATAL, or at the
        deadline, naming each program that is not ready with the tail of its log.
        """
        deadline = time.monotonic() + timeout
        pending = {p.name: p for p in self.programs}
        reasons: dict[str, str] = {}
        settle: float | None = None
        while True:
            states = {s.name: s for s in self.status() if s.state != "UNAVAILABLE"}
            crashed = [s for s in states.values() if s.crashed]
            # With startretries=0, BACKOFF turns FATAL within a moment: report the final state.
            settling = any(s.state == "BACKOFF" for s in crashed)
            if settling and settle is None:
                settle = time.monotonic() + 2.0
            if crashed and (not settling or time.monotonic() > (settle or 0)):
                raise MeshNotReady(self._report("crashed while starting", crashed, {}))
            for name, prog in list(pending.items()):
                st = states.get(name)
                if st is None or st.state != "RUNNING":
                    reasons[name] = f"state {st.state if st else 'missing'}"
                    continue
                failure = _first_failure(prog)
                if failure is None:
                    del pending[name]
                    reasons.pop(name, None)
                else:
                    reasons[name] = failure
            if not pending:
                return
            if time.monotonic() > deadline:
                not_ready = [states[n] for n in pending if n in states]
                raise MeshNotReady(
                    self._report(f"not ready after {timeout:.0f}s", not_ready, reasons)
                )
            time.sleep(poll)

    def _report(
        self, headline: str, programs: Sequence[ProgramStatus], reasons: Mapping[str, str]
    ) -> str:
        parts = [f"mesh {headline}:"]
        for st in programs:
            why = reasons.get(st.name) or st.description
            parts.append(f"- {st.name} [{st.state}] {why}")
            if st.log is not None:
                parts += [f"    | {line}" for line in tail(st.log, 15)]
        return "\n".join(parts)

    def stop(self, timeout: float = 30.0) -> None:
        """Shut supervisord down (programs get TERM, then KILL after their grace period) and
        wait until it and every child are gone; kill whatever is left after ``timeout``."""
        procs = self._processes()
        # Not running, or already shutting down: the wait below covers both.
        with contextlib.suppress(OSError, xmlrpc.client.Error, http.client.HTTPException):
            _rpc(self.var).shutdown()
        alive = wait_gone(procs, timeout)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        wait_gone(alive, 5.0)
        for path in (self.var.socket, self.var.pidfile):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _supervisord(self) -> psutil.Process | None:
        """This run's supervisord, checked by its command line (pids get reused)."""
        pids: list[int] = []
        with contextlib.suppress(OSError, ValueError):
            pids.append(int(self.var.pidfile.read_text().strip()))
        with contextlib.suppress(OSError, xmlrpc.client.Error, http.client.HTTPException):
            pids.append(int(_rpc(self.var, 2.0).getPID()))
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if str(self.var.conf) in proc.cmdline():
                    return proc
        return None

    def _processes(self) -> list[psutil.Process]:
        """supervisord and all its descendants."""
        sup = self._supervisord()
        if sup is None:
            return []
        try:
            return [sup, *sup.children(recursive=True)]
        except psutil.Error:
            return [sup]

    def _kill_leftovers(self) -> None:
        procs = self._processes()
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        wait_gone(procs, 5.0)

    def __enter__(self) -> Mesh:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- logs --------------------------------------------------------------------------------

    def log_paths(self, names: Iterable[str] | None = None) -> dict[str, Path]:
        wanted = None if names is None else set(names)
        return {p.name: p.log for p in self.programs if wanted is None or p.name in wanted}


def is_alive(proc: psutil.Process) -> bool:
    """Running, and not a zombie: the daemonised supervisord is reparented to init, which
    may reap it late; a dead process waiting to be reaped is gone for our purposes."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_gone(procs: Sequence[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` for ``procs`` to end; return those still alive."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if is_alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def _first_failure(program: Program) -> str | None:
    for probe in program.probes:
        failure = probe.check()
        if failure is not None:
            return failure
    return None
