"""The `lref` command: one subcommand per job, each with its flags as one dataclass.

The subcommand modules list their `COMMANDS` (a dataclass of flags, a runner and a one-line summary);
this module builds the whole parser from them (`lref.commands.args` turns fields into flags), reads a
subcommand's `--config FILE.yaml` into defaults that flags given on the command line override, and
runs the job. The runners import heavy libraries (torch, transformers, ...) only inside, so `lref
--help` stays fast. Errors in user input become one line on stderr and exit code 2; set LREF_DEBUG=1
to see the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import sys

from lref.commands.args import Command, Group, Parser, add_dataclass_arguments, config_values
from lref.config import ConfigError

# The modules that list subcommands, in help order. Each has `COMMANDS`.
COMMAND_MODULES = [
    "lref.commands.core",
    "lref.commands.train",
    "lref.commands.tagging",
    "lref.commands.serve",
    "lref.commands.distill",
    "lref.commands.weak",
]
CONFIG_HELP = "YAML file of these flags (flags given on the command line win)"


def commands() -> list[Command | Group]:
    return [c for name in COMMAND_MODULES for c in importlib.import_module(name).COMMANDS]


def find_command(argv: list[str]) -> Command | None:
    """The subcommand named in argv (`eval`, `distill ranker`), or None."""
    table = {c.path: c for c in commands() if isinstance(c, Command)}
    groups = {c.name for c in commands() if isinstance(c, Group)}
    top = next((i for i, t in enumerate(argv) if t in table or t in groups), None)
    if top is None:
        return None
    if argv[top] in table:
        return table[argv[top]]
    return next((table[f"{argv[top]} {t}"] for t in argv[top + 1 :] if f"{argv[top]} {t}" in table), None)


def build_parser(config: tuple[str, dict] | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand; `config` = (command path, field values from its --config file)."""
    parser = Parser(prog="lref", description="LLM relevance and content-understanding toolkit.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subs = {"": parser.add_subparsers(dest="command", metavar="COMMAND", required=True)}
    for c in commands():
        if isinstance(c, Group):
            p = subs[""].add_parser(c.name, help=c.summary, summary=c.summary)
            subs[c.name] = p.add_subparsers(dest=c.dest, metavar=c.metavar, required=True)
            continue
        parent, _, leaf = c.path.rpartition(" ")
        p = subs[parent].add_parser(leaf, help=c.summary, summary=c.summary, description=c.details)
        if c.config_file:
            p.add_argument("--config", help=CONFIG_HELP)
        add_dataclass_arguments(p, c.args, config[1] if config and config[0] == c.path else None)
    return parser


def config_path(argv: list[str]) -> str | None:
    path = None
    for i, tok in enumerate(argv):
        if tok == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        elif tok.startswith("--config="):
            path = tok.split("=", 1)[1]
    return path


def parse(argv: list[str]) -> tuple[Command, object, list[str], bool]:
    """(the subcommand, its flags dataclass, flags passed on unparsed, --verbose) of a command line."""
    named = find_command(argv)
    path = config_path(argv) if named is not None and named.config_file else None
    parser = build_parser((named.path, config_values(path, named.args)) if path else None)
    ns, extra = parser.parse_known_args(argv)
    groups = {c.name: c.dest for c in commands() if isinstance(c, Group)}
    name = ns.command + (f" {getattr(ns, groups[ns.command])}" if ns.command in groups else "")
    cmd = next(c for c in commands() if isinstance(c, Command) and c.path == name)
    if extra and not cmd.accepts_extra:  # only `serve` passes unknown flags on (to vLLM)
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cmd.args)}
    return cmd, cmd.args(**values), extra, ns.verbose


def main(argv: list[str] | None = None) -> int:
    from lref.data import DataError
    from lref.labels import LabelError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        cmd, args, extra, verbose = parse(argv)
        logging.basicConfig(
            level=logging.DEBUG if verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        for noisy in ("bm25s", "httpx", "urllib3", "chromadb"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        return int((cmd.run(args, extra) if cmd.accepts_extra else cmd.run(args)) or 0)
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
