"""``shopmesh``: run and inspect the local mesh.

A click group so later subcommands (fault, trace, saga, dlq) are one decorated function
each: ``@main.command()`` in this module or ``main.add_command(...)`` from another.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from shopmesh import cli_ops, compose
from shopmesh.envoy import admin
from shopmesh.envoy.layout import sidecar_name
from shopmesh.envoy.sidecar import LOCAL_APP
from shopmesh.runner import (
    LogFollower,
    Mesh,
    MeshAlreadyRunning,
    MeshError,
    MeshNotRunning,
    ProgramStatus,
    default_var_dir,
    tail,
)
from shopmesh.topology import TOPOLOGY_FILE_ENV, TopologyError, load_topology

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

# Exit codes: 1 = something failed or crashed, 3 = no mesh running (as in LSB `status`).
EXIT_FAILED = 1
EXIT_NOT_RUNNING = 3
EXIT_INTERRUPTED = 130

PALETTE = ("cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_cyan")


@dataclass(frozen=True)
class Options:
    var: Path
    topology_file: Path | None

    def new_mesh(self) -> Mesh:
        return Mesh(load_topology(self.topology_file), self.var)

    def running_mesh(self) -> Mesh:
        """The mesh as it was started from this var dir (its ports), else from the file."""
        try:
            return Mesh.attach(self.var)
        except MeshNotRunning:
            return self.new_mesh()


pass_options = click.make_pass_decorator(Options)


@click.group()
@click.option(
    "--var",
    "var",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SHOPMESH_VAR",
    default=None,
    help="State directory (logs, data, keys, run files). Default: <repo>/var.",
)
@click.option(
    "--topology",
    "topology_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar=TOPOLOGY_FILE_ENV,
    default=None,
    help="Topology file. Default: <repo>/topology.yaml.",
)
@click.pass_context
def main(ctx: click.Context, var: Path | None, topology_file: Path | None) -> None:
    """Run and inspect the shopmesh local mesh.

    Ports derive from topology.yaml; move them with SHOPMESH_BASE_PORT and
    SHOPMESH_GATEWAY_PORT.
    """
    ctx.obj = Options((var or default_var_dir()).resolve(), topology_file)


# -- rendering -------------------------------------------------------------------------------


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _state_style(state: str) -> str:
    if state == "RUNNING":
        return "green"
    if state in ("STARTING", "STOPPING", "UNAVAILABLE"):
        return "yellow"
    return "bold red"


def endpoints_table(mesh: Mesh) -> Table:
    table = Table(title=f"shopmesh endpoints (base port {mesh.topology.base_port})")
    for column in ("instance", "kind", "address"):
        table.add_column(column, no_wrap=True)
    table.add_column("health", overflow="fold")
    probes = mesh.probe()
    for prog in mesh.programs:
        failure = probes[prog.name]
        health = Text("SERVING", "green") if failure is None else Text(failure, "red")
        table.add_row(prog.name, prog.kind, prog.address or "-", health)
    for item in mesh.unavailable:
        table.add_row(item.name, item.kind, "-", Text("not started (see above)", "yellow"))
    return table


def status_table(statuses: Sequence[ProgramStatus]) -> Table:
    table = Table(title="shopmesh programs")
    for column in ("program", "kind", "state", "pid", "uptime", "address"):
        table.add_column(column, no_wrap=True)
    # supervisor's description only repeats pid and uptime for running programs.
    details = ["" if st.state == "RUNNING" else st.description for st in statuses]
    if any(details):
        table.add_column("detail", overflow="fold")
    for st, detail in zip(statuses, details, strict=True):
        cells: list[str | Text] = [
            st.name,
            st.kind,
            Text(st.state, _state_style(st.state)),
            str(st.pid or "-"),
            _uptime(st.uptime),
            st.address or "-",
        ]
        table.add_row(*cells, *([detail] if any(details) else []))
    return table


def envoy_table(mesh: Mesh, statuses: Sequence[ProgramStatus]) -> Table | None:
    """Each running Envoy's view of the instances it calls (admin /clusters).

    A sidecar's own app (local_app) is left out: it is not health-checked, so always shows
    healthy; the gateway's and the dependents' views of it say more."""
    running = {s.name for s in statuses if s.state == "RUNNING"}
    envoys = [p for p in mesh.programs if p.kind in ("gateway", "sidecar") and p.name in running]
    if not envoys:
        return None
    table = Table(title="envoy clusters")
    for column in ("envoy", "cluster", "host", "active"):
        table.add_column(column, no_wrap=True)
    table.add_column("health", overflow="fold")
    for prog in envoys:
        try:
            hosts = admin.clusters(prog.ports["admin"])
        except admin.AdminError as exc:
            table.add_row(prog.name, "-", "-", "-", Text(str(exc), "red"))
            continue
        hosts = [h for h in hosts if h.cluster != LOCAL_APP]
        for host in sorted(hosts, key=lambda h: (h.cluster, h.hostname)):
            if host.healthy:
                health = Text("healthy", "green")
            else:
                health = Text(" ".join(host.flags), "bold red" if host.ejected else "red")
            row = (prog.name, host.cluster, host.hostname, str(host.active_requests))
            table.add_row(*row, health)
        if hosts:
            table.add_section()
    return table


class Prefixer:
    """``instance | line`` with a stable colour per program."""

    def __init__(self, names: Sequence[str]) -> None:
        self._width = max((len(n) for n in names), default=0)
        self._styles = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}

    def line(self, name: str, text: str) -> Text:
        prefix = Text(f"{name:<{self._width}} | ", self._styles.get(name, "white"))
        return prefix + Text(text)


def _warn_unavailable(mesh: Mesh) -> None:
    for item in mesh.unavailable:
        err_console.print(f"[yellow]not starting {item.name}:[/] {item.reason}")


def _start_and_wait(mesh: Mesh, timeout: float) -> None:
    """Start, wait until ready; on failure or Ctrl-C stop everything and exit non-zero."""
    _warn_unavailable(mesh)
    try:
        mesh.start()
        with console.status("waiting for health checks..."):
            mesh.wait_ready(timeout)
    except MeshAlreadyRunning as exc:  # someone else's run: report, never stop it
        err_console.print(Text(str(exc), "red"))
        raise SystemExit(EXIT_FAILED) from None
    except MeshError as exc:
        err_console.print(Text(str(exc), "red"))
        _stop(mesh)
        raise SystemExit(EXIT_FAILED) from None
    except KeyboardInterrupt:
        _stop(mesh)
        raise SystemExit(EXIT_INTERRUPTED) from None


def _stop(mesh: Mesh) -> None:
    # A second Ctrl-C must not interrupt the shutdown and orphan processes.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with console.status("stopping..."):
            mesh.stop()
    finally:
        signal.signal(signal.SIGINT, previous)
    console.print("mesh stopped")


def _first_grpcurl(mesh: Mesh) -> str | None:
    for prog in mesh.programs:
        if prog.kind == "gateway" and prog.address:
            return f"grpcurl -plaintext {prog.address} list"
    for prog in mesh.programs:
        if prog.kind == "service" and prog.address:
            return f"grpcurl -plaintext {prog.address} grpc.health.v1.Health/Check"
    return None


def _print_ready(mesh: Mesh) -> None:
    console.print(endpoints_table(mesh))
    hint = _first_grpcurl(mesh)
    if hint:
        console.print(f"try: [bold]{hint}[/]")


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C and SIGTERM both raise KeyboardInterrupt, so either stops cleanly."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a shell starting us in the background leaves it ignored.
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# -- commands --------------------------------------------------------------------------------


@main.command()
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for health.")
@pass_options
def up(options: Options, timeout: float) -> None:
    """Start the mesh, wait until healthy, stream all logs; Ctrl-C stops everything."""
    mesh = options.new_mesh()
    # Note where each log ends now: logs are appended across runs, show only this one's.
    follower = LogFollower(mesh.log_paths())
    prefixer = Prefixer([p.name for p in mesh.programs])
    with _interruptible():
        _start_and_wait(mesh, timeout)
        try:  # from here on, whatever happens, stop what we started
            _print_ready(mesh)
            console.print("[dim]streaming logs; Ctrl-C stops the mesh[/]")
            _stream(mesh, follower, prefixer)
        except KeyboardInterrupt:
            console.print()
        finally:
            _stop(mesh)


def _stream(mesh: Mesh, follower: LogFollower, prefixer: Prefixer) -> None:
    """Print new log lines until interrupted; report crashes as they happen."""
    reported: set[str] = set()
    next_check = 0.0
    while True:
        for name, line in follower.poll():
            console.print(prefixer.line(name, line), soft_wrap=True)
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + 2.0
            try:
                statuses = mesh.status()
            except MeshNotRunning:
                err_console.print("[red]supervisord is gone; the mesh was stopped elsewhere[/]")
                return
            for st in statuses:
                if st.crashed and st.name not in reported:
                    reported.add(st.name)
                    err_console.print(
                        Text(f"{st.name} {st.state}: {st.description} (log: {st.log})", "bold red")
                    )
        time.sleep(0.2)


@main.command()
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for health.")
@pass_options
def start(options: Options, timeout: float) -> None:
    """Start the mesh in the background and wait until healthy."""
    mesh = options.new_mesh()
    with _interruptible():
        _start_and_wait(mesh, timeout)
    _print_ready(mesh)
    console.print(f"running from {mesh.var.root}; [bold]shopmesh stop[/] stops it")


@main.command()
@pass_options
def stop(options: Options) -> None:
    """Stop the mesh started from this var dir (no process is left behind)."""
    mesh = options.running_mesh()
    if not mesh.is_running():
        mesh.stop()  # still reaps leftovers of a run that died uncleanly
        console.print("no mesh running")
        return
    _stop(mesh)


@main.command()
@pass_options
def status(options: Options) -> None:
    """Show every program's state; exit 1 if one crashed, 3 if nothing runs."""
    mesh = options.running_mesh()
    try:
        statuses = mesh.status()
    except MeshNotRunning:
        console.print(f"no mesh running from {mesh.var.root}")
        raise SystemExit(EXIT_NOT_RUNNING) from None
    console.print(status_table(statuses))
    envoys = envoy_table(mesh, statuses)
    if envoys is not None:
        console.print(envoys)
    rpcs = cli_ops.rpc_table(mesh.var.root / "traces")
    if rpcs is not None:
        console.print(rpcs)
    crashed = [s for s in statuses if s.crashed]
    if crashed:
        for st in crashed:
            err_console.print(Text(f"{st.name} crashed; last lines of {st.log}:", "bold red"))
            for line in tail(st.log, 10) if st.log else []:
                err_console.print(f"  {line}", markup=False)
        raise SystemExit(EXIT_FAILED)


@main.command()
@click.argument("instances", nargs=-1)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("-n", "--lines", default=40, show_default=True, help="Lines of history each.")
@click.option("--trace", "trace_id", default=None, help="Only the lines of this trace id.")
@pass_options
def logs(
    options: Options, instances: tuple[str, ...], follow: bool, lines: int, trace_id: str | None
) -> None:
    """Print the logs of INSTANCES (an instance, or a service for all its instances;
    default: every program), optionally following them or only one trace's lines."""
    mesh = options.running_mesh()
    known = mesh.log_paths()

    for name in instances:
        if name != "supervisord" and not any(_selects(name, program) for program in known):
            raise click.BadParameter(
                f"{name!r}; known: {', '.join([*known, 'supervisord'])}", param_hint="INSTANCES"
            )
    paths = {
        n: p for n, p in known.items() if not instances or any(_selects(i, n) for i in instances)
    }
    if "supervisord" in instances:
        paths["supervisord"] = mesh.var.log_file("supervisord")
    prefixer = Prefixer(list(paths))
    follower = LogFollower(paths)  # before printing history, so no line falls in between
    for name, path in paths.items():
        if trace_id:
            history = [line for line in _read_lines(path) if trace_id in line]
        else:
            history = tail(path, lines)
        for line in history:
            console.print(prefixer.line(name, line), soft_wrap=True)
    if not follow:
        return
    with contextlib.suppress(KeyboardInterrupt), _interruptible():
        while True:
            for name, line in follower.poll():
                if not trace_id or trace_id in line:
                    console.print(prefixer.line(name, line), soft_wrap=True)
            time.sleep(0.2)


def _selects(selector: str, program: str) -> bool:
    """`order` selects order-1, order-2 and order-1-sidecar; `order-1` only order-1."""
    return program == selector or (
        program.startswith(f"{selector}-") and not selector[-1:].isdigit()
    )


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []


@main.command()
@click.argument("instance")
@click.argument("action", type=click.Choice(["abort", "delay", "clear"]))
@click.option("--percent", default=100, show_default=True, type=click.IntRange(0, 100))
@click.option(
    "--status",
    "grpc_status",
    default=14,
    show_default=True,
    type=click.IntRange(1, 16),
    help="gRPC status code of an abort (14 = UNAVAILABLE).",
)
@click.option("--delay-ms", default=1000, show_default=True, type=click.IntRange(1))
@pass_options
def fault(
    options: Options, instance: str, action: str, percent: int, grpc_status: int, delay_ms: int
) -> None:
    """Make INSTANCE's sidecar abort or delay the calls it receives, or stop doing so.

    The switch is a set of Envoy runtime keys on that sidecar's admin API; health checks
    are never affected, so only outlier detection notices an aborting instance.
    """
    mesh = options.running_mesh()
    try:
        name = sidecar_name(mesh.topology.instance(instance))
        port = mesh.program(name).ports["admin"]
    except (TopologyError, MeshError) as exc:
        raise click.BadParameter(str(exc), param_hint="INSTANCE") from None
    try:
        if action == "abort":
            admin.fault_abort(port, percent, grpc_status)
        elif action == "delay":
            admin.fault_delay(port, percent, delay_ms)
        else:
            admin.fault_clear(port)
        keys = admin.runtime(port)
    except admin.AdminError as exc:
        err_console.print(Text(f"{name}: {exc} (is the mesh running?)", "red"))
        raise SystemExit(EXIT_FAILED) from None
    shown = ", ".join(f"{k}={v}" for k, v in sorted(keys.items()) if k.startswith("fault."))
    console.print(f"{instance}: {action} ({shown})")


for _command in cli_ops.COMMANDS:
    main.add_command(_command)
main.add_command(compose.command)


if __name__ == "__main__":
    main()
