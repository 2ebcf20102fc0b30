# shopmesh's everyday interface. Run recipes through ./dev, which puts the pinned
# toolchain (.venv/bin: buf, envoy, nats-server, grpcurl, just) first on PATH.

set shell := ["bash", "-euo", "pipefail", "-c"]

# The committed image of the published contracts that `breaking` compares against.
baseline_image := "contracts/baseline.binpb"

# The bench's load generator, installed into .tools/bin by `tools` (bench/ghz.py names it too).
ghz_version := "v0.120.0"

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

# A customer's journey through the gateway: register, log in, order, watch the saga.
demo *args:
    shopmesh demo {{args}}

# Print an order's status and saga timeline.
saga order_id:
    shopmesh saga {{order_id}}

# Dead letters: `dlq list`, `dlq show SEQ`, `dlq replay SEQ`.
dlq *args:
    shopmesh dlq {{args}}

# Print a trace's span tree: a trace id, an order id, or --last.
trace *args:
    shopmesh trace {{args}}

# Make an instance's sidecar abort or delay calls: `fault payment-1 abort`, `... clear`.
fault *args:
    shopmesh fault {{args}}

# Mint a token for grpcurl (default: an admin): TOKEN=$(./dev token).
token *args:
    @shopmesh token {{args}}

# The Go plugins (`tool` lines of gen/go/go.mod) go into .tools/bin, package-lock.json
# (protoc-gen-es, the TS client) into node_modules; seconds when nothing changed. Without
# Go or Node it says what it skips; with CI=true it fails instead.
# Install the pinned Go and TypeScript code generators.
tools:
    #!/usr/bin/env bash
    set -euo pipefail
    missing() {
        if [[ "${CI:-}" == true ]]; then echo "tools: $1 is required (CI=true)" >&2; exit 1; fi
        echo "tools: $1 not found: skipping gen/$2 and the $2 client's tests (install $1 to run them)" >&2
    }
    if command -v go >/dev/null; then
        (cd gen/go && GOBIN="$PWD/../../.tools/bin" go install tool)
        # ghz for `bench`: `go install` stamps the module version into the binary.
        if ! go version -m .tools/bin/ghz 2>/dev/null | grep -Eq "mod\s+github.com/bojand/ghz\s+{{ghz_version}}\s"; then
            GOBIN="$PWD/.tools/bin" go install "github.com/bojand/ghz/cmd/ghz@{{ghz_version}}"
        fi
    else
        missing go go
    fi
    if command -v npm >/dev/null; then
        want="$(cat package.json package-lock.json clients/ts/package.json | sha256sum)"
        if [[ "$(cat node_modules/.shopmesh-lock 2>/dev/null)" != "$want" ]]; then
            npm ci --no-audit --no-fund --loglevel=error
            echo "$want" >node_modules/.shopmesh-lock
        fi
    else
        missing node ts
    fi

# Regenerate gen/ from proto/ (commit the result).
gen: tools
    buf generate

# Fail when gen/ differs from what the contracts generate.
gen-check: tools
    #!/usr/bin/env bash
    set -euo pipefail
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    cp -r proto third_party tools buf.yaml buf.gen.yaml "$tmp"/
    # The installed plugins, and gen/go's hand-written go.mod and go.sum.
    ln -s "$PWD/.tools" "$PWD/node_modules" "$tmp"/
    mkdir -p "$tmp/gen/go" && cp gen/go/go.mod gen/go/go.sum "$tmp/gen/go/"
    checked=gen
    if [[ ! -x .tools/bin/protoc-gen-go || ! -e node_modules/.bin/protoc-gen-es ]]; then
        echo "gen-check: no Go or Node here (see above): checking gen/python only" >&2
        python3 -c 'import sys, yaml; c = yaml.safe_load(open(sys.argv[1])); c["plugins"] = [p for p in c["plugins"] if p["out"] == "gen/python"]; yaml.safe_dump(c, open(sys.argv[1], "w"))' "$tmp/buf.gen.yaml"
        checked=gen/python
    fi
    (cd "$tmp" && buf generate)
    if ! diff -r --brief "$checked" "$tmp/$checked"; then
        echo "gen-check: gen/ is out of date with proto/ (files above). Run ./dev gen and commit." >&2
        exit 1
    fi
    echo "gen-check: $checked/ matches proto/"

# Regenerate docker-compose.yml and envoy/compose/ from topology.yaml (commit the result).
compose *args:
    shopmesh compose generate {{args}}

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

# Cost of each proxy hop and saga throughput, on a mesh of its own: `bench [--quick] [--record]`.
bench *args: tools
    python -m bench {{args}}

# Every check and the whole test suite: what CI runs.
test *args: lint gen-check breaking
    pytest {{args}}
