"""A running Envoy's admin API (loopback only): readiness, cluster health, stats, runtime.

Used by ``shopmesh status`` and ``shopmesh fault`` and by the mesh tests.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shopmesh.envoy.sidecar import (
    FAULT_ABORT_PERCENT,
    FAULT_ABORT_STATUS,
    FAULT_DEFAULT_DELAY_MS,
    FAULT_DEFAULT_STATUS,
    FAULT_DELAY_MS,
    FAULT_DELAY_PERCENT,
)
from shopmesh.topology import LOOPBACK


class AdminError(RuntimeError):
    pass


def request(port: int, path: str, method: str = "GET", timeout: float = 2.0) -> str:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        body = response.read().decode(errors="replace")
    except OSError as exc:
        raise AdminError(f"envoy admin {LOOPBACK}:{port}{path}: {exc}") from exc
    finally:
        conn.close()
    if response.status != 200:
        raise AdminError(f"envoy admin {path}: {response.status} {body.strip()[:200]}")
    return body


def ready(port: int) -> bool:
    try:
        return request(port, "/ready", timeout=1.0).strip() == "LIVE"
    except AdminError:
        return False


@dataclass(frozen=True)
class HostStatus:
    cluster: str
    hostname: str  # the instance name the config gave the endpoint
    address: str
    flags: tuple[str, ...]  # failed_outlier_check, failed_active_health_check, ...
    active_requests: int

    @property
    def healthy(self) -> bool:
        return not self.flags

    @property
    def ejected(self) -> bool:
        return "failed_outlier_check" in self.flags


_FLAG_FIELDS = (
    "failed_active_health_check",
    "failed_outlier_check",
    "failed_active_degraded_check",
    "pending_dynamic_removal",
    "pending_active_hc",
    "excluded_via_immediate_hc_fail",
    "active_hc_timeout",
)


def _stat(stats: list[dict[str, Any]], name: str) -> int:
    for stat in stats:
        if stat.get("name") == name:
            return int(stat.get("value", 0))
    return 0


def clusters(port: int) -> list[HostStatus]:
    """Every host of every cluster with its health flags (``/clusters?format=json``)."""
    data = json.loads(request(port, "/clusters?format=json"))
    out = []
    for cluster in data.get("cluster_statuses", []):
        for host in cluster.get("host_statuses", []):
            health = host.get("health_status", {})
            flags = tuple(f for f in _FLAG_FIELDS if health.get(f))
            if health.get("eds_health_status", "HEALTHY") not in ("HEALTHY", "UNKNOWN"):
                flags += (str(health["eds_health_status"]).lower(),)
            sock = host.get("address", {}).get("socket_address", {})
            out.append(
                HostStatus(
                    cluster=cluster["name"],
                    hostname=host.get("hostname", ""),
                    address=f"{sock.get('address')}:{sock.get('port_value')}",
                    flags=flags,
                    active_requests=_stat(host.get("stats", []), "rq_active"),
                )
            )
    return out


def stats(port: int, pattern: str) -> dict[str, int]:
    """Counters and gauges whose name matches the regex ``pattern``."""
    query = urllib.parse.urlencode({"filter": pattern, "format": "json"})
    data = json.loads(request(port, f"/stats?{query}"))
    return {
        s["name"]: int(s["value"])
        for s in data.get("stats", [])
        if "value" in s and isinstance(s["value"], int)
    }


def runtime_modify(port: int, values: Mapping[str, str | int]) -> None:
    """Set runtime keys in the admin layer (POST only; GET is refused with 405)."""
    query = urllib.parse.urlencode({k: str(v) for k, v in values.items()})
    request(port, f"/runtime_modify?{query}", method="POST")


def runtime(port: int) -> dict[str, str]:
    data = json.loads(request(port, "/runtime"))
    return {k: str(v.get("final_value", "")) for k, v in data.get("entries", {}).items()}


def fault_abort(port: int, percent: int = 100, grpc_status: int = FAULT_DEFAULT_STATUS) -> None:
    runtime_modify(port, {FAULT_ABORT_PERCENT: percent, FAULT_ABORT_STATUS: grpc_status})


def fault_delay(port: int, percent: int = 100, delay_ms: int = FAULT_DEFAULT_DELAY_MS) -> None:
    runtime_modify(port, {FAULT_DELAY_PERCENT: percent, FAULT_DELAY_MS: delay_ms})


def fault_clear(port: int) -> None:
    runtime_modify(port, {FAULT_ABORT_PERCENT: 0, FAULT_DELAY_PERCENT: 0})
