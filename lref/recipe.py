"""Multi-stage YAML recipes: a list of `lref` subcommands run in order in one run folder.

A recipe has free sections (model / data / train / eval, ...) and a `stages` list. Each stage names a
subcommand and its flags; string values may use `{out}` (the run folder) and `{section.key}` to
refer to other values, so one override (`--set data.dir=...`) reaches every stage that uses it.
The resolved recipe is written to `RUNDIR/config.yaml` before any stage starts, and each stage's wall time
to `RUNDIR/timings.yaml` as it ends.

Progress: `run_recipe` calls `on_stage` with a `StageEvent` when a stage starts and when it ends, carrying
the run's elapsed time and an estimate of what is left. The estimate scales the elapsed time by the stages'
expected shares: the seconds of a previous run in the same folder (its `timings.yaml`), else the recipe's
`expected_seconds` table (measured on a reference run), else equal shares per stage.
"""

from __future__ import annotations

import copy
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from lref.config import ConfigError, apply_overrides, load_yaml, lookup

log = logging.getLogger(__name__)
_REF = re.compile(r"\{([A-Za-z0-9_.\-]+)\}")


def _text(value) -> str:
    """A value spliced into a string, spelt as YAML reads it back (null, true, false) for `--set` lists."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def resolve(tree: dict, out: str, recipe_dir: str = ".") -> dict:
    """Replace `{out}`, `{recipe_dir}` and `{dotted.path}` references in every string of the recipe.

    A string that is one whole reference takes the referred value with its type, so `"{a.b}"` stays a
    number, a boolean or null (a null flag is left out of the command line).
    """
    context = {"out": out, "recipe_dir": recipe_dir}

    def sub(value):
        if isinstance(value, str):
            whole = _REF.fullmatch(value)
            if whole and whole.group(1) not in context:
                try:
                    return sub(lookup(tree, whole.group(1)))
                except (KeyError, IndexError, ValueError, TypeError):
                    raise ConfigError(f"recipe refers to {value}, which it does not define") from None

            def repl(m):
                key = m.group(1)
                if key in context:
                    return str(context[key])
                try:
                    found = lookup(tree, key)
                except (KeyError, IndexError, ValueError, TypeError):
                    raise ConfigError(f"recipe refers to {{{key}}}, which it does not define") from None
                return _text(sub(found))

            return _REF.sub(repl, value)
        if isinstance(value, dict):
            return {k: sub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [sub(v) for v in value]
        return value

    return sub(copy.deepcopy(tree))


def stage_command(stage: dict):
    """The `lref` subcommand a stage runs (`command: distill` + `positional: ranker` -> "distill ranker"), or None."""
    from lref.cli import find_command

    sub = (stage.get("args") or {}).get("positional")
    first = [str(sub[0] if isinstance(sub, list) else sub)] if sub else []
    return find_command([*str(stage["command"]).split(), *first])


def negatable_flags(command: str) -> set[str]:
    """The `--no-X` options of an `lref` subcommand (a space-separated path such as "distill ranker")."""
    from lref.cli import find_command
    from lref.commands.args import option_strings

    cmd = find_command(command.split())
    return {o for o in option_strings(cmd.args) if o.startswith("--no-")} if cmd else set()


def check_stages(recipe, stages: list) -> None:
    """Every stage names a subcommand and only its flags, before the first stage runs."""
    from lref.commands.args import option_strings

    for i, stage in enumerate(stages):
        if not isinstance(stage, dict) or "command" not in stage:
            raise ConfigError(f"{recipe}: stage {i} needs a `command`")
        cmd = stage_command(stage)
        name = stage.get("name", stage["command"])
        if cmd is None:
            raise ConfigError(f"{recipe}: stage {name!r}: no lref command {stage['command']!r}")
        known = set(option_strings(cmd.args))
        for key in stage.get("args") or {}:
            if key != "positional" and "--" + str(key).replace("_", "-") not in known and not cmd.accepts_extra:
                raise ConfigError(f"{recipe}: stage {name!r}: unknown key {key!r} (lref {cmd.path} has no such flag)")


def stage_argv(stage: dict, negatable: set[str] | None = None) -> list[str]:
    """`{command: eval, args: {scorer: bm25, out: x}}` -> ["eval", "--scorer", "bm25", "--out", "x"].

    `false` becomes `--no-X` where the command has that flag (`lora: false` -> `--no-lora`), else it is left out.
    """
    negatable = negatable or set()
    argv = str(stage["command"]).split()
    for key, value in (stage.get("args") or {}).items():
        flag = "--" + str(key).replace("_", "-")
        if key == "positional":
            argv += [str(v) for v in (value if isinstance(value, list) else [value])]
        elif value is True:
            argv.append(flag)
        elif value is False:
            if "--no-" + flag[2:] in negatable:
                argv.append("--no-" + flag[2:])
        elif value is None:
            continue
        elif isinstance(value, list):
            for v in value:
                argv += [flag, str(v)]
        else:
            argv += [flag, str(value)]
    return argv


@dataclass(frozen=True)
class StageEvent:
    """A stage starting (`seconds` None) or ending (`seconds` its wall time), for progress displays."""

    index: int  # 1-based
    total: int
    name: str
    argv: list[str]
    elapsed: float  # seconds since the run started
    remaining: float | None  # estimated seconds left in the run (this stage included while it runs)
    seconds: float | None = None


def stage_weights(names: list[str], expected: dict | None, previous: dict | None) -> tuple[list[float], bool]:
    """Each stage's expected share of the run, and whether the shares are seconds (else equal counts).

    A previous run's timings win over the recipe's `expected_seconds`; a stage in neither gets the mean of the
    known ones.
    """
    table = {}
    for source in (expected, previous):
        for key, value in (source or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                table[str(key)] = float(value)
    known = [table[n] for n in names if n in table]
    if not known:
        return [1.0] * len(names), False
    fill = sum(known) / len(known)
    return [table.get(n, fill) for n in names], True


def estimate_left(weights: list[float], done: int, elapsed: float, in_seconds: bool) -> float | None:
    """Seconds left after `done` stages: the elapsed time scaled by the weight left over the weight done.

    Before any stage ends, seconds-weights are taken as they are (the reference run's pace); counts give none.
    """
    rest = sum(weights[done:])
    finished = sum(weights[:done])
    if finished > 0 and elapsed > 0:
        return elapsed * rest / finished
    return rest if in_seconds else None


def read_timings(path: Path) -> dict:
    """A previous run's `timings.yaml` ({stage: seconds}), or {} when absent or unreadable."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def run_recipe(
    recipe: str | Path,
    out: str | Path,
    overrides: list[str] | None = None,
    on_stage: Callable[[StageEvent], None] | None = None,
) -> dict:
    """Run every stage of a recipe in order; raise RuntimeError on the first stage that fails."""
    from lref.cli import main

    tree = apply_overrides(load_yaml(recipe), overrides or [])
    stages = tree.get("stages")
    if not isinstance(stages, list) or not stages:
        raise ConfigError(f"{recipe}: a recipe needs a non-empty `stages` list")
    resolved = resolve(tree, str(out), str(Path(recipe).parent))
    check_stages(recipe, resolved["stages"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
    names = [str(stage.get("name", stage["command"])) for stage in resolved["stages"]]
    expected = resolved.get("expected_seconds")
    weights, in_seconds = stage_weights(
        names, expected if isinstance(expected, dict) else None, read_timings(out / "timings.yaml")
    )
    timings = {}
    start = time.perf_counter()
    total = len(names)
    for i, (stage, name) in enumerate(zip(resolved["stages"], names, strict=True)):
        argv = stage_argv(stage, negatable_flags(stage_command(stage).path))
        log.info("stage %d/%d %s: lref %s", i + 1, total, name, " ".join(argv))
        elapsed = time.perf_counter() - start
        if on_stage:
            on_stage(StageEvent(i + 1, total, name, argv, elapsed, estimate_left(weights, i, elapsed, in_seconds)))
        t0 = time.perf_counter()
        code = main(argv)
        timings[name] = round(time.perf_counter() - t0, 2)
        (out / "timings.yaml").write_text(yaml.safe_dump(timings, sort_keys=False), encoding="utf-8")
        if code != 0:
            raise RuntimeError(f"stage {name!r} failed with exit code {code}")
        elapsed = time.perf_counter() - start
        log.debug("stage %d/%d %s took %.1fs", i + 1, total, name, timings[name])
        if on_stage:
            left = estimate_left(weights, i + 1, elapsed, in_seconds)
            on_stage(StageEvent(i + 1, total, name, argv, elapsed, left, timings[name]))
    return resolved
