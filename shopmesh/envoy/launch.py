"""Start a program once a file exists: ``python -m shopmesh.envoy.launch --wait-for F -- cmd``.

The gateway reads the JWKS only when it starts, and the user service writes it on its
first start; under supervisord every program starts at once, so the gateway waits here.
The program then replaces this process (exec), so supervisord signals Envoy itself.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def wait_for(path: Path, timeout: float, poll: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="shopmesh.envoy.launch")
    parser.add_argument("--wait-for", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command after --")
    if not wait_for(args.wait_for, args.timeout):
        print(f"{args.wait_for} did not appear within {args.timeout:.0f}s", file=sys.stderr)
        raise SystemExit(1)
    print(f"{args.wait_for} is there; starting {Path(command[0]).name}", flush=True)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
