"""Envoy configs for the gateway and the sidecars, generated from the topology.

``layout`` (where files go, which instances are meshed), ``settings`` (every resilience
value), ``blocks`` (shared Envoy messages), ``gateway`` and ``sidecar`` (the two configs),
``render`` (write them, describe the processes), ``admin`` (talk to a running Envoy).
"""
