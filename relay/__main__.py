"""``python -m relay ...`` is ``backchannel relay ...``."""

from __future__ import annotations

import argparse
import sys

from keys.errors import BackchannelError

from .cli import register


def main() -> int:
    parser = argparse.ArgumentParser(prog="backchannel")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    register(sub)
    args = parser.parse_args(["relay", *sys.argv[1:]])
    try:
        return int(args.func(args) or 0)
    except BackchannelError as exc:
        print(f"backchannel: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
