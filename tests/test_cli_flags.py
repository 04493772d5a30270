"""The command line built from dataclasses keeps every flag of the hand-written argparse it replaced.

`fixtures/cli_flags_before_issue10.json` was recorded from the old parser (lref before issue 10): per
subcommand, each flag's option strings, dest, default, required, nargs, choices, action and type, and two
command lines (only the required flags; every flag with a distinct value) with the values they parsed to.
"""

import dataclasses
import json
import typing
from pathlib import Path

import pytest

from lref.batch.config import RayArgs
from lref.cli import build_parser, commands, main, parse
from lref.commands.args import Command, option_strings

OLD = json.loads((Path(__file__).parent / "fixtures" / "cli_flags_before_issue10.json").read_text())
TABLE = {c.path: c for c in commands() if isinstance(c, Command)}
# flags added since the recording, with their defaults: each must leave the old command lines' values unchanged
RAY = {f.name: f.default for f in dataclasses.fields(RayArgs)}  # issue 12: batch jobs on Ray Data
ADDED = {
    "tag": RAY,
    "score": {**RAY, "resume": False},
    # issue 11: the students served beside (or instead of) the LLM judge, and the request limits
    "serve": {
        "ranker": None,
        "int8": True,
        "ranker_backend": "torch",
        "ltr": None,
        "recall": None,
        "products": None,
        "scheme": "esci",
        "max_documents": 1000,
        "max_text_chars": 20_000,
        "max_queue": 256,
    },
    # issue 14: perturbed evaluation and LTR feature groups
    "eval": {"perturb": None, "perturb_seed": 0, "perturb_per_query": 1},
    "distill ltr": {"feature_groups": None, "drop_feature_groups": None},
    # issue 14: a trained student folder as the teacher, one more source beside --model / --endpoint
    "distill teacher": {**RAY, "resume": False, "student": None},
    # issue 14: pretraining on weak pairs from the catalogue (`lref distill weak`)
    "distill ranker": {"pairs": None, "augment_attacks": 0},
    "distill recall": {"pairs": None, "augment_attacks": 0},
}
# flags added to an old mutually exclusive group: {path: {flag: the group's old member it joins}}
ADDED_EXCLUSIVE = {"distill teacher": {"student": "model"}}
# flags whose `required` changed on purpose: `lref serve` may serve students without an LLM (issue 11)
NOW_OPTIONAL = {("serve", "model")}


def added_options(path: str) -> set[str]:
    """The option strings of the added flags: `--x`, and `--no-x` for a switch that defaults to true."""
    out = set()
    for name, default in ADDED.get(path, {}).items():
        flag = name.replace("_", "-")
        out |= {f"--{flag}", f"--no-{flag}"} if default is True else {f"--{flag}"}
    return out


def test_the_same_subcommands():
    assert set(TABLE) == set(OLD) | {"summary", "distill weak"}  # new: `lref summary` (issue 13), weak pairs (14)


@pytest.mark.parametrize("path", sorted(OLD))
def test_every_field_has_help_and_every_command_a_summary(path):
    cmd = TABLE[path]
    assert cmd.summary and "\n" not in cmd.summary
    for f in dataclasses.fields(cmd.args):
        assert f.metadata.get("help", "").strip(), f"{path}: --{f.name} has no help"


@pytest.mark.parametrize("path", sorted(OLD))
def test_help_starts_with_what_the_command_does(path, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([*path.split(), "--help"])
    assert e.value.code == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.lower() == TABLE[path].summary.lower() + "."


def literal_choices(hint):
    """The choices of a `Literal[...]` or `Literal[...] | None` field, else None."""
    for t in (hint, *typing.get_args(hint)):
        if typing.get_origin(t) is typing.Literal:
            return list(typing.get_args(t))
    return None


@pytest.mark.parametrize("path", sorted(OLD))
def test_flag_names_required_and_choices_survive(path):
    old, cls = OLD[path], TABLE[path].args
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    old_options = {o for f in old["flags"] for o in f["options"]}
    positional = {n for n, f in fields.items() if f.metadata.get("positional")}
    assert set(option_strings(cls)) | positional == old_options | added_options(path)
    assert TABLE[path].config_file == old["config"]
    for flag in old["flags"]:
        f = fields[flag["dest"]]
        if f.metadata.get("positional"):
            assert flag["nargs"] == f.metadata.get("nargs")
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if (path, flag["dest"]) not in NOW_OPTIONAL:
            assert flag["required"] == (required and not f.metadata.get("exclusive")), flag["dest"]
        assert literal_choices(hints[f.name]) == flag["choices"], flag["dest"]
        action = {"_AppendAction": "append", "_ExtendAction": "extend"}.get(flag["action"])
        if action:
            assert f.metadata.get("action") == action and f.metadata.get("nargs") == flag["nargs"]
    joins = ADDED_EXCLUSIVE.get(path, {})
    old_groups = [g + [new for new, member in joins.items() if member in g] for g in old["exclusive"]]
    assert [sorted(g) for g in old_groups] == [
        sorted(n for n, f in fields.items() if f.metadata.get("exclusive") == g)
        for g in {f.metadata["exclusive"] for f in fields.values() if f.metadata.get("exclusive")}
    ]


@pytest.mark.parametrize("path", sorted(OLD))
@pytest.mark.parametrize("which", ["required flags only", "every flag"])
def test_command_lines_parse_to_the_old_values(path, which):
    """Defaults (first line) and each flag's type, action and dest (second line) as the old parser had them."""
    recorded = OLD[path]["parses"][which == "every flag"]
    cmd, args, extra, _ = parse(recorded["argv"])
    assert cmd.path == path and extra == []
    assert dataclasses.asdict(args) == recorded["values"] | ADDED.get(path, {})


def test_choices_are_the_old_ones():
    for path, old in OLD.items():
        parser_flags = {f["dest"]: f for f in old["flags"] if f["choices"]}
        for dest, flag in parser_flags.items():
            argv = [*path.split(), *old["parses"][0]["argv"][len(path.split()) :]]
            for choice in flag["choices"]:
                _, args, _, _ = parse([*argv, flag["options"][0], choice])
                assert getattr(args, dest) == choice
            with pytest.raises(SystemExit):
                parse([*argv, flag["options"][0], "not-a-choice"])


def test_teacher_takes_model_or_endpoint_not_both(tmp_path, capsys):
    base = ["distill", "teacher", "--data", "d", "--out", "o"]
    assert parse([*base, "--endpoint", "http://x/v1"])[1].endpoint == "http://x/v1"
    for argv in (base, [*base, "--model", "m", "--endpoint", "e"]):
        with pytest.raises(SystemExit):
            parse(argv)
    cfg = tmp_path / "t.yaml"
    cfg.write_text("model: m\ndata: d\nout: o\n")  # a config file may name the source
    assert parse(["distill", "teacher", "--config", str(cfg)])[1].model == "m"


def test_serve_passes_unknown_flags_on_and_others_refuse_them(capsys):
    cmd, args, extra, _ = parse(["serve", "--model", "m", "--tensor-parallel-size", "2", "--lora", "a=b"])
    assert extra == ["--tensor-parallel-size", "2"] and args.lora == ["a=b"]
    with pytest.raises(SystemExit):
        parse(["eval", "--data", "d", "--out", "o", "--tensor-parallel-size", "2"])
    assert "unrecognized arguments: --tensor-parallel-size 2" in capsys.readouterr().err


def test_config_values_are_typed_and_errors_name_file_and_key(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: d\nout: o\nlearning_rate: 5e-5\nmodel: m\nloss_type: ipo\nno_lora: true\n")
    assert main(["dpo", "--config", str(cfg)]) == 2  # no_lora is a flag, not a key: the key is lora
    assert f"{cfg}: unknown key 'no_lora'" in capsys.readouterr().err
    cfg.write_text("data: d\nout: o\nlearning-rate: 5e-5\nmodel: m\nloss_type: ipo\nlora: false\n")
    args = parse(["dpo", "--config", str(cfg), "--loss-type", "hinge"])[1]
    # YAML reads 5e-5 as a string: converted as on the command line; a scalar list value becomes a list
    assert args.learning_rate == 5e-5 and args.loss_type == ["ipo", "hinge"] and args.lora is False
    cfg.write_text("data: d\nout: o\nqueries: many\n")
    assert main(["eval", "--config", str(cfg)]) == 2
    assert f"{cfg}: key 'queries': expected int, got 'many'" in capsys.readouterr().err
    cfg.write_text("data: d\nout: o\nscorer: bm26\n")
    assert main(["eval", "--config", str(cfg)]) == 2
    assert "key 'scorer': 'bm26' is not one of" in capsys.readouterr().err
