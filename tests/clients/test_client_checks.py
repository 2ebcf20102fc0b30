"""Each client's own checks: formatting, vet, strict type-checking and its unit tests."""

from __future__ import annotations

import pytest

from tests.clients.shopctl import REPO, npm, run, toolchain

pytestmark = pytest.mark.integration


def test_go_code_is_formatted_vetted_and_its_tests_pass() -> None:
    go = toolchain("go", "the Go client's tests need Go 1.26+")
    gofmt = toolchain("gofmt", "gofmt comes with Go")
    unformatted = run([gofmt, "-l", "clients/go", "gen/go"], REPO).stdout
    assert unformatted == "", f"gofmt -w these: {unformatted}"
    for module in ("gen/go", "clients/go"):
        run([go, "vet", "./..."], REPO / module)
    run([go, "test", "./..."], REPO / "clients" / "go")


def test_ts_code_typechecks_strictly_and_its_tests_pass(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    npm_ = npm()
    run([npm_, "run", "--silent", "typecheck"], REPO / "clients" / "ts")
    bundle = tmp_path_factory.mktemp("shopctl-ts-test") / "shopctl.test.mjs"
    run([npm_, "test"], REPO / "clients" / "ts", {"SHOPCTL_TEST_BUNDLE": str(bundle)})
