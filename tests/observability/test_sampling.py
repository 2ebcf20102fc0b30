"""Sampling follows the standard variables, parent-based, and reaches every service.

`telemetry.configure` passes the SDK no sampler, so `OTEL_TRACES_SAMPLER` and
`OTEL_TRACES_SAMPLER_ARG` decide; each case runs in a process of its own, because a
process installs its tracer provider once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from shopmesh.runner import supervisord_env

pytestmark = pytest.mark.unit

ROOTS = 4000
CHILDREN = 300

# Root spans as a service starts them (a call without a caller's context), then server
# spans under a remote parent that was sampled, and under one that was not.
PROGRAM = f"""
import json, secrets
import grpc
from shopmesh import telemetry

telemetry.configure("order", "order-1")
tracer = telemetry.tracer()

def sampled(span):
    return span.get_span_context().trace_flags.sampled

roots = sum(sampled(tracer.start_span("root")) for _ in range({ROOTS}))
spans = telemetry.ServerSpans("/shop.order.v1.OrderService/PlaceOrder", tracer)

def children(flags):
    count = 0
    for _ in range({CHILDREN}):
        header = f"00-{{secrets.token_hex(16)}}-{{secrets.token_hex(8)}}-{{flags}}"
        span, token = spans.start((("traceparent", header),))
        count += sampled(span)
        with tracer.start_as_current_span("db commit") as inner:
            count += sampled(inner)  # a local child of the server span
        spans.end(span, token, grpc.StatusCode.OK, None)
    return count

print(json.dumps({{"roots": roots, "sampled": children("01"), "unsampled": children("00")}}))
"""


def run(**variables: str) -> dict[str, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        env={**env, **variables},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    counts: dict[str, int] = json.loads(done.stdout)
    return counts


def test_by_default_every_trace_is_sampled() -> None:
    assert run() == {"roots": ROOTS, "sampled": 2 * CHILDREN, "unsampled": 0}


def test_a_tenth_of_new_traces_and_every_child_as_its_parent_decided() -> None:
    counts = run(OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="0.1")
    # Binomial(4000, 0.1): 400 +- 19; these bounds are more than five deviations wide.
    assert 300 < counts["roots"] < 500, counts
    assert counts["sampled"] == 2 * CHILDREN  # a sampled caller: always, ratio or not
    assert counts["unsampled"] == 0


def test_the_runner_hands_the_sampler_variables_to_every_process() -> None:
    variables = {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    }
    env = supervisord_env({**variables, "PATH": "/usr/bin"})
    assert {k: env[k] for k in variables} == variables
