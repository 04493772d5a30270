import json
from pathlib import Path

import pytest
import yaml

from lref.config import ConfigError, apply_overrides
from lref.recipe import resolve, run_recipe, stage_argv


def test_overrides_and_references():
    tree = {"data": {"dir": "a"}, "stages": [{"command": "eval", "args": {"data": "{data.dir}", "out": "{out}/x"}}]}
    apply_overrides(tree, ["data.dir=/d", "stages.0.args.queries=3"])
    r = resolve(tree, "/run")
    assert r["stages"][0]["args"] == {"data": "/d", "out": "/run/x", "queries": 3}
    typed = {
        "t": {"n": 5, "off": None, "on": True},
        "stages": [{"command": "x", "args": {"n": "{t.n}", "s": "n={t.n}"}}],
    }
    typed["stages"][0]["args"].update({"off": "{t.off}", "on": "{t.on}", "d": "{recipe_dir}/r.yaml"})
    typed["stages"][0]["args"]["set"] = ["a={t.off}", "b={t.on}"]  # spliced as YAML spells them, for a nested `run`
    args = resolve(typed, "o", "recipes")["stages"][0]["args"]
    want = {"n": 5, "s": "n=5", "off": None, "on": True, "d": "recipes/r.yaml", "set": ["a=null", "b=true"]}
    assert args == want  # whole references keep their types
    argv = stage_argv({"command": "x", "args": args})
    flags = ["--n", "5", "--s", "n=5", "--on", "--d", "recipes/r.yaml", "--set", "a=null", "--set", "b=true"]
    assert argv == ["x", *flags]
    with pytest.raises(ConfigError, match="nope"):
        resolve({"stages": [{"command": "x", "args": {"a": "{nope.key}"}}]}, "o")
    with pytest.raises(ConfigError):
        apply_overrides({}, ["noequals"])


def test_false_becomes_no_flag_where_the_command_has_one():
    from lref.recipe import negatable_flags

    neg = negatable_flags("sft")
    assert {"--no-lora", "--no-packing"} <= neg
    argv = stage_argv({"command": "sft", "args": {"lora": False, "packing": False, "resume": False}}, neg)
    assert argv == ["sft", "--no-lora", "--no-packing"]
    assert "--no-test-fraction" not in negatable_flags("distill split")


@pytest.mark.parametrize("recipe", sorted(Path("recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_names_only_known_flags(recipe):
    """Each stage of the recipes in recipes/ parses to its subcommand's dataclass, as written."""
    from lref.cli import parse
    from lref.config import load_yaml
    from lref.recipe import check_stages, negatable_flags, stage_command

    stages = resolve(load_yaml(recipe), "OUT", "recipes")["stages"]
    check_stages(recipe, stages)
    for stage in stages:
        cmd = stage_command(stage)
        parsed, args, extra, _ = parse(stage_argv(stage, negatable_flags(cmd.path)))
        assert parsed is cmd and extra == []
        for key, value in (stage.get("args") or {}).items():
            if key.startswith("no_") and value is True and hasattr(args, key[3:]):
                assert getattr(args, key[3:]) is False  # no_lora: true -> --no-lora -> lora False
            elif key != "positional" and value is not None and not isinstance(value, bool):
                got = getattr(args, key)
                want = [value] if isinstance(got, list) and not isinstance(value, list) else value
                assert got == want or str(got) == str(want) or float(got) == float(want), key


def test_unknown_stage_key_is_refused_before_any_stage_runs(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stages:\n  - {name: e, command: eval, args: {data: d, out: o, scorr: bm25}}\n")
    with pytest.raises(ConfigError, match="stage 'e': unknown key 'scorr'"):
        run_recipe(recipe, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    recipe.write_text("stages:\n  - {command: distill, args: {positional: rank}}\n")
    with pytest.raises(ConfigError, match="no lref command"):
        run_recipe(recipe, tmp_path / "out")


def test_stage_argv():
    argv = stage_argv(
        {"command": "compare", "args": {"positional": ["a", "b"], "out": "c", "flag": True, "no": False}}
    )
    assert argv == ["compare", "a", "b", "--out", "c", "--flag"]


def test_quickstart_recipe_smoke(esci150, tiny_bert, tmp_path):
    """The whole quickstart (select -> SFT -> Multi-CoT -> DPO -> eval -> ablation -> distill) on 12 queries,
    with steps cut by overrides and a tiny BERT as the students' base."""
    from conftest import write_slice

    data = write_slice(esci150, tmp_path / "data", 12)
    out = tmp_path / "qs"
    cut = ["train.sft_steps=2", "train.mcot_steps=1", "train.dpo_steps=1", "data.budget=24", "data.diversity_pool=40"]
    cut += ["train.mcot_rows=6", "train.dpo_pairs=6", "eval.queries=1", "eval.cot_tokens=4", "data.holdout=0.25"]
    cut += ["distill.steps=2", f"distill.base={tiny_bert}", "distill.top_n=1"]
    run_recipe("recipes/quickstart.yaml", out, [f"data.dir={data}", "stages.0.args.vocab_size=600", *cut])
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["data"]["dir"] == str(data)
    selected = [json.loads(x) for x in (out / "select" / "selected.jsonl").read_text().splitlines()]
    assert len(selected) == 24 and all(r["selected_by"] in ("diversity", "balance") and r["reason"] for r in selected)
    holdout = set((out / "select" / "holdout_queries.txt").read_text().split())
    assert holdout and not holdout & {r["query_id"] for r in selected}
    ablation = json.loads((out / "ablation.json").read_text())
    assert [r["stage"] for r in ablation] == ["bm25", "base", "sft", "mcot", "dpo"]
    assert all(r["n_pairs"] == ablation[0]["n_pairs"] for r in ablation)  # every stage on the same split
    assert ablation[0]["macro_f1"] is None and all(0 <= r["accuracy"] <= 1 for r in ablation[1:])
    assert "| dpo |" in (out / "ablation.md").read_text() and (out / "ablation.png").stat().st_size > 0
    dpo = json.loads((out / "dpo" / "summary.json").read_text())
    assert {"before", "after"} <= set(dpo) and "over_grading_rate" in dpo["after"]
    assert (out / "sft" / "metrics.jsonl").exists() and (out / "sft" / "model" / "config.json").exists()
    # distill, the last stage: the DPO'd judge is the teacher, the quickstart's held-out queries the test split
    d = out / "distill"
    assert json.loads((d / "split" / "split.json").read_text())["test"] == sorted(holdout)
    assert yaml.safe_load((d / "config.yaml").read_text())["teacher"]["model"] == str(out / "dpo" / "model")
    ltr = json.loads((d / "ltr" / "ltr.json").read_text())
    assert len(ltr["ranker_folds"]) == 3 and len(ltr["recall_folds"]) == 3
    table = (d / "comparison.md").read_text()
    assert all(
        name in table for name in ("bm25", "minilm-zero-shot", "ce-gold-only", "ltr-pipeline", "ltr-pipeline-int8")
    )
