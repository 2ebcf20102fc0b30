"""Test-only fault hooks: make a process really die, or fail, at a named point.

Off unless the process runs with `SHOPMESH_FAULT_HOOKS=1` (the fault tests set it; the
runner never does). A test arms a point by creating the file
`<SHOPMESH_VAR>/faults/<service>.<point>`:

- `crash_point`: the first process of that service to reach the point removes the file
  (so exactly one process dies, once) and kills itself with SIGKILL: no cleanup, no
  flush, no goodbye, like a power cut.
- `fail_point`: raises while the file exists; removing it is "fixing the cause".

Points: `relay.before_publish` (outbox row committed, not published),
`relay.before_mark` (published and acknowledged, not marked), `consumer.before_ack`
(handler's effect committed, message not acknowledged), `consumer.handler` (fail).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
from pathlib import Path

log = logging.getLogger(__name__)


class InjectedFault(RuntimeError):
    """Raised by an armed fail point."""


@functools.cache
def _hooks_dir() -> Path | None:
    """Where armed points are, None when hooks are off. Read once: the points sit on
    the hot path of every event, and a process's environment does not change."""
    if os.environ.get("SHOPMESH_FAULT_HOOKS") != "1":
        return None
    return Path(os.environ.get("SHOPMESH_VAR", "var")) / "faults"


def _armed(point: str) -> Path | None:
    hooks = _hooks_dir()
    if hooks is None:
        return None
    return hooks / f"{os.environ.get('SHOPMESH_SERVICE', '')}.{point}"


def crash_point(point: str) -> None:
    path = _armed(point)
    if path is None:
        return
    try:
        path.unlink()  # only one process wins the race to die
    except FileNotFoundError:
        return
    log.warning("fault hook: dying at %s", point)
    os.kill(os.getpid(), signal.SIGKILL)


def fail_point(point: str) -> None:
    path = _armed(point)
    if path is not None and path.exists():
        raise InjectedFault(f"fault hook: {point} is armed")


def arm(var_dir: Path, service: str, point: str) -> Path:
    """Arm `point` for `service` in the mesh that uses `var_dir`; returns the file."""
    path = var_dir / "faults" / f"{service}.{point}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path
