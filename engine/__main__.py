"""Eve's command line: `python -m engine COMMAND ...` (`--help` lists the commands)."""

from __future__ import annotations

import argparse
import sys

from engine.errors import EveInputError


def _build_data(args: argparse.Namespace) -> None:
    from engine.data.defaults import BUILDERS, build_default

    for name in args.names or list(BUILDERS):
        path = build_default(name, force=args.force)
        print(f"{name}: {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build-data", help="build the embedded default datasets if missing")
    build.add_argument("names", nargs="*", help="shapes and/or synthbrain (default: both)")
    build.add_argument("--force", action="store_true", help="rebuild even if present")
    build.set_defaults(run=_build_data)

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except EveInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
