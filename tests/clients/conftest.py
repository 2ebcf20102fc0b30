"""The Go and TypeScript shopctl, built once per test session into a temporary folder,
and one mesh with its gateway per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.clients.shopctl import LANGUAGES, REPO, Shopctl, npm, run, toolchain
from tests.support.envoymesh import RunningMesh, running_mesh


@pytest.fixture(scope="session")
def go_shopctl(tmp_path_factory: pytest.TempPathFactory) -> Shopctl:
    go = toolchain("go", "the Go client's tests need Go 1.26+")
    binary = tmp_path_factory.mktemp("shopctl-go") / "shopctl"
    run([go, "build", "-o", str(binary), "./cmd/shopctl"], REPO / "clients" / "go")
    return Shopctl("go", (str(binary),))


@pytest.fixture(scope="session")
def ts_shopctl(tmp_path_factory: pytest.TempPathFactory) -> Shopctl:
    node = toolchain("node", "the TypeScript client's tests need Node 20+")
    bundle = tmp_path_factory.mktemp("shopctl-ts") / "shopctl.mjs"
    # The bundle carries its dependencies: it runs from the temporary folder.
    run(
        [npm(), "run", "--silent", "bundle"],
        REPO / "clients" / "ts",
        {"SHOPCTL_BUNDLE": str(bundle)},
    )
    return Shopctl("ts", (node, str(bundle)))


@pytest.fixture(params=LANGUAGES)
def shopctl(request: pytest.FixtureRequest) -> Shopctl:
    """Each client in turn; a missing toolchain skips only its own runs."""
    built: Shopctl = request.getfixturevalue(f"{request.param}_shopctl")
    return built


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    """The whole mesh with its gateway, for the module."""
    with running_mesh(tmp_path_factory.mktemp("clients") / "var", {}) as running:
        yield running
