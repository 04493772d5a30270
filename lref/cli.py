"""The `lref` command: one subcommand per job.

Each subcommand module adds its parsers and imports heavy libraries (torch, transformers, ...) only
inside the function that runs the job, so `lref --help` stays fast. Errors in user input become one
line on stderr and exit code 2; set LREF_DEBUG=1 to see the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from lref.config import ConfigError, flag_defaults

# The modules that add subcommands, in help order. Each has `add_parsers(subparsers)`.
COMMAND_MODULES = [
    "lref.commands.core",
    "lref.commands.train",
    "lref.commands.tagging",
    "lref.commands.serve",
    "lref.commands.distill",
]


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="lref", description="LLM relevance and content-understanding toolkit.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parsers(sub)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse, with `--config FILE` values of the subcommand as defaults, so explicit flags win."""
    config = None
    for i, tok in enumerate(argv):
        if tok == "--config" and i + 1 < len(argv):
            config = argv[i + 1]
        elif tok.startswith("--config="):
            config = tok.split("=", 1)[1]
    subparser = None
    node = parser  # argparse keeps subparsers in private fields; there is no public way to walk them
    # the deepest subcommand named in argv (`eval`, `distill ranker`, ...) takes the config's values
    while node._subparsers is not None:
        choices = node._subparsers._group_actions[0].choices
        name = next((t for t in argv if t in choices), None)
        if name is None:
            break
        node = subparser = choices[name]
    if config and subparser is not None:
        actions = {a.dest: a for a in subparser._actions if a.dest not in ("help", "config")}
        defaults = flag_defaults(config, set(actions))
        subparser.set_defaults(**defaults)
        for dest in defaults:
            actions[dest].required = False
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra", False):  # only `serve` passes unknown flags on (to vLLM)
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    return args


def main(argv: list[str] | None = None) -> int:
    from lref.data import DataError
    from lref.labels import LabelError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = _parse(parser, argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        for noisy in ("bm25s", "httpx", "urllib3", "chromadb"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        return int(args.func(args) or 0)
    except (DataError, LabelError, ConfigError, FileNotFoundError, NotADirectoryError) as e:
        if os.environ.get("LREF_DEBUG"):
            raise
        print(f"lref: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lref: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug or an environment problem: one line, the traceback on request
        if os.environ.get("LREF_DEBUG"):
            raise
        print(f"lref: error: {type(e).__name__}: {e} (set LREF_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
