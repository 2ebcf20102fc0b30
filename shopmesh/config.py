"""Configuration of one service instance, read once from the environment.

The runner (shopmesh.runner) sets these variables from the topology; a developer can set
them by hand to run one instance alone. Settings that only one service has (the payment
provider's limits, the token lifetime) are read by that service's `main`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ServiceConfig:
    service: str
    instance: str
    grpc_addr: str
    var_dir: Path
    db_url: str
    # Empty: run without the event bus (servicer tests).
    nats_url: str
    # Where this instance reaches each sync dependency: its sidecar's egress listener in
    # the mesh, the dependency itself when run alone.
    upstreams: Mapping[str, str] = field(default_factory=dict)
    # Seconds that in-flight calls get to finish after SIGTERM.
    shutdown_grace: float = 5.0

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str] | None = None) -> ServiceConfig:
        env = os.environ if env is None else env
        var_dir = Path(env.get("SHOPMESH_VAR", REPO_ROOT / "var")).resolve()
        prefix = "SHOPMESH_UPSTREAM_"
        return cls(
            service=service,
            instance=env.get("SHOPMESH_INSTANCE", f"{service}-1"),
            grpc_addr=env.get("SHOPMESH_GRPC_ADDR", "127.0.0.1:0"),
            var_dir=var_dir,
            db_url=env.get(f"SHOPMESH_{service.upper()}_DB", default_db_url(var_dir, service)),
            nats_url=env.get("SHOPMESH_NATS_URL", "nats://127.0.0.1:4222"),
            upstreams={
                key.removeprefix(prefix).lower(): value
                for key, value in env.items()
                if key.startswith(prefix)
            },
            shutdown_grace=float(env.get("SHOPMESH_SHUTDOWN_GRACE", "5")),
        )

    def upstream(self, dependency: str) -> str:
        try:
            return self.upstreams[dependency]
        except KeyError:
            raise RuntimeError(
                f"{self.instance} needs SHOPMESH_UPSTREAM_{dependency.upper()} (host:port)"
            ) from None


def default_db_url(var_dir: Path, service: str) -> str:
    return f"sqlite:///{var_dir / 'data' / f'{service}.db'}"
