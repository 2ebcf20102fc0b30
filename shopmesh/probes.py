"""Readiness probes: is the process on 127.0.0.1:PORT ready? None when it is, else why not.

The runner waits on them (shopmesh.runner); containers run them as their healthcheck::

    python -m shopmesh.probes grpc 7100          # grpc.health.v1 Check: SERVING
    python -m shopmesh.probes http 7102 /ready   # HTTP 200

Kept apart from the runner, and light to import, because Docker runs a healthcheck every
few seconds in every container.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from shopmesh.topology import LOOPBACK


@dataclass(frozen=True)
class TcpProbe:
    port: int

    def check(self) -> str | None:
        """None when ready, else why not."""
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=1.0):
                return None
        except OSError as exc:
            return f"tcp {self.port}: {exc.strerror or exc}"


@dataclass(frozen=True)
class HttpProbe:
    port: int
    path: str = "/"

    def check(self) -> str | None:
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=1.0)
        try:
            conn.request("GET", self.path)
            response = conn.getresponse()
            body = response.read(200).decode(errors="replace")
        except OSError as exc:
            return f"http {self.port}{self.path}: {exc.strerror or exc}"
        finally:
            conn.close()
        if response.status != 200:
            return f"http {self.port}{self.path}: {response.status} {body.strip()}"
        return None


@dataclass(frozen=True)
class GrpcHealthProbe:
    port: int
    service: str = ""

    def check(self) -> str | None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        target = f"{LOOPBACK}:{self.port}"
        # No proxy: a developer's http_proxy would otherwise swallow loopback gRPC.
        with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=self.service), timeout=1.0)
            except grpc.RpcError as exc:
                return f"grpc health {target}: {exc.code().name} {exc.details() or ''}".rstrip()
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            return f"grpc health {target}: {name}"
        return None


Probe = TcpProbe | HttpProbe | GrpcHealthProbe


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shopmesh.probes", description=__doc__)
    parser.add_argument("kind", choices=("tcp", "http", "grpc"))
    parser.add_argument("port", type=int)
    parser.add_argument(
        "target", nargs="?", default="", help="http: the path (/); grpc: the service ('')"
    )
    args = parser.parse_args(argv)
    probe: Probe
    if args.kind == "tcp":
        probe = TcpProbe(args.port)
    elif args.kind == "http":
        probe = HttpProbe(args.port, args.target or "/")
    else:
        probe = GrpcHealthProbe(args.port, args.target)
    failure = probe.check()
    if failure is not None:
        print(failure, file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
