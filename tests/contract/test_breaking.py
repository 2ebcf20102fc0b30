"""`buf breaking` against the committed baseline fails for the right reasons.

Each case edits a temporary copy of the contracts and runs the same command as
`just breaking`; the baseline itself is never touched.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "contracts" / "baseline.binpb"

pytestmark = pytest.mark.contract

Edit = Callable[[Path], None]


def _replace(path: str, old: str, new: str) -> Edit:
    def edit(workspace: Path) -> None:
        file = workspace / path
        text = file.read_text()
        assert old in text, f"{old!r} not in {path}"
        file.write_text(text.replace(old, new, 1))

    return edit


def _remove_block(path: str, pattern: str) -> Edit:
    def edit(workspace: Path) -> None:
        file = workspace / path
        text, count = re.subn(pattern, "", file.read_text(), count=1, flags=re.S)
        assert count == 1, f"{pattern!r} not in {path}"
        file.write_text(text)

    return edit


def _breaking_rules(edit: Edit, tmp_path: Path) -> set[str]:
    """Apply `edit` to a copy of the workspace and return the rule ids buf reports."""
    for name in ("proto", "third_party"):
        shutil.copytree(ROOT / name, tmp_path / name)
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    edit(tmp_path)
    result = subprocess.run(
        ["buf", "breaking", "proto", "--against", str(BASELINE), "--error-format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    rules = {json.loads(line)["type"] for line in result.stdout.splitlines() if line.strip()}
    assert (result.returncode != 0) == bool(rules), result.stderr
    return rules


ORDER = "proto/shop/order/v1/order.proto"
ORDER_EVENTS = "proto/shop/order/v1/events.proto"

BREAKING = {
    "renumber a field": (
        _replace(ORDER, "string idempotency_key = 6;", "string idempotency_key = 16;"),
        "FIELD_NO_DELETE",
    ),
    "change a field's type": (
        _replace(ORDER, "int32 quantity = 3;", "int64 quantity = 3;"),
        "FIELD_SAME_TYPE",
    ),
    "remove an RPC": (
        _remove_block(ORDER, r"\n  // Lists the caller's orders.*?\n  }\n"),
        "RPC_NO_DELETE",
    ),
    "remove an event field": (
        _remove_block(ORDER_EVENTS, r"\n  // Card to charge; empty means the card on file.\n.*?;"),
        "FIELD_NO_DELETE",
    ),
}


def _add_rpc(workspace: Path) -> None:
    _replace(
        ORDER,
        "service OrderService {",
        "service OrderService {\n  // Counts orders.\n"
        "  rpc CountOrders(CountOrdersRequest) returns (CountOrdersResponse);\n",
    )(workspace)
    with (workspace / ORDER).open("a") as file:
        file.write(
            "\n// Input of CountOrders.\nmessage CountOrdersRequest {}\n"
            "\n// Output of CountOrders.\nmessage CountOrdersResponse {\n"
            "  // Number of orders.\n  int32 count = 1;\n}\n"
        )


COMPATIBLE: dict[str, Edit] = {
    "add an optional field": _replace(
        ORDER,
        "repeated TimelineEntry timeline = 10;",
        "repeated TimelineEntry timeline = 10;\n  optional string note = 11;",
    ),
    "add an RPC": _add_rpc,
}


@pytest.mark.parametrize("case", sorted(BREAKING))
def test_breaking_change_fails(case: str, tmp_path: Path) -> None:
    edit, rule = BREAKING[case]
    assert rule in _breaking_rules(edit, tmp_path)


@pytest.mark.parametrize("case", sorted(COMPATIBLE))
def test_compatible_change_passes(case: str, tmp_path: Path) -> None:
    assert _breaking_rules(COMPATIBLE[case], tmp_path) == set()


def test_unchanged_contracts_pass(tmp_path: Path) -> None:
    assert _breaking_rules(lambda _: None, tmp_path) == set()
