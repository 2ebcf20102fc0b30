# shopmesh's everyday interface. Run recipes through ./dev, which puts the pinned
# toolchain (.venv/bin: buf, envoy, nats-server, grpcurl, just) first on PATH.

set shell := ["bash", "-euo", "pipefail", "-c"]

# The committed image of the published contracts that `breaking` compares against.
baseline_image := "contracts/baseline.binpb"

# List the recipes.
default:
    @just --list

# Start the whole mesh in the foreground; Ctrl-C stops it.
up *args:
    shopmesh up {{args}}

# Start the mesh detached (logs under var/log/).
start *args:
    shopmesh start {{args}}

# Stop a detached mesh.
stop:
    shopmesh stop

# Show every process of the mesh.
status:
    shopmesh status

# Follow the logs of one instance, or of all.
logs *args:
    shopmesh logs {{args}}

# Regenerate gen/ from proto/ (commit the result).
gen:
    buf generate

# Fail when gen/ differs from what the contracts generate.
gen-check:
    #!/usr/bin/env bash
    set -euo pipefail
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    cp -r proto third_party tools buf.yaml buf.gen.yaml "$tmp"/
    (cd "$tmp" && buf generate)
    if ! diff -r --brief gen "$tmp/gen"; then
        echo "gen-check: gen/ is out of date with proto/ (files above). Run ./dev gen and commit." >&2
        exit 1
    fi
    echo "gen-check: gen/ matches proto/"

# Lint the contracts and the Python code.
lint:
    buf lint
    buf format --diff --exit-code
    ruff check .
    ruff format --check .
    mypy

# Format the contracts and the Python code in place.
fmt:
    buf format -w
    ruff format .
    ruff check --fix .

# Fail when proto/ breaks the published contracts (see docs/contracts.md).
breaking:
    buf breaking proto --against {{baseline_image}}
    @echo "breaking: no breaking change against {{baseline_image}}"

# Record the current contracts as the published baseline (only when you publish them).
baseline:
    buf build --exclude-source-info -o {{baseline_image}}

# Describe a service or message from the contracts, without a running server.
describe symbol:
    grpcurl -protoset <(buf build -o -) describe {{symbol}}

# Every check and the whole test suite: what CI runs.
test *args: lint gen-check breaking
    pytest {{args}}
