import json
import re
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


def write_metrics(folder: Path, **metrics) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_stage_shares_and_what_is_left():
    from lref.recipe import estimate_left, stage_weights

    weights, seconds = stage_weights(["a", "b", "c"], {"a": 10, "b": 30}, {"a": 2})
    assert (weights, seconds) == ([2.0, 30.0, 16.0], True)  # a previous run wins; c gets the mean of a and b
    assert estimate_left([1.0, 3.0, 1.0], 1, 2.0, True) == 8.0  # 2 s for 1 share, 4 shares left
    assert estimate_left([1.0, 3.0, 1.0], 0, 0.0, True) == 5.0  # nothing done: the reference seconds
    assert stage_weights(["a", "b"], None, {"x": 1}) == ([1.0, 1.0], False)  # no timings: equal counts
    assert estimate_left([1.0, 1.0], 0, 0.0, False) is None and estimate_left([1.0, 1.0], 1, 3.0, False) == 3.0


def test_run_prints_each_stage_with_elapsed_and_left(tmp_path, capsys):
    from lref.cli import main

    bm25 = write_metrics(tmp_path / "bm25", name="bm25", **{"ndcg@10": 0.5})
    recipe = tmp_path / "r.yaml"
    stages = [{"name": n, "command": "compare", "args": {"positional": [str(bm25)]}} for n in ("one", "two", "three")]
    recipe.write_text(yaml.safe_dump({"expected_seconds": {"one": 1, "two": 3}, "stages": stages}))
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("stage")]
    assert len(lines) == 6
    assert re.fullmatch(r"stage 1/3 one \(elapsed 0\.0s, about 6\.0s left\)", lines[0])  # 1 + 3 + 2 (their mean)
    assert re.fullmatch(r"stage 1/3 one done in \S+, about \S+ left", lines[1])
    assert lines[2].startswith("stage 2/3 two (elapsed ") and lines[4].startswith("stage 3/3 three (elapsed ")
    assert re.fullmatch(r"stage 3/3 three done in \S+; the run took \S+", lines[5])
    timings = yaml.safe_load((tmp_path / "run" / "timings.yaml").read_text())
    assert list(timings) == ["one", "two", "three"] and all(v > 0 for v in timings.values())


def test_summary_table_reports_and_judge_note(tmp_path, capsys):
    from lref.cli import main

    run = tmp_path / "run"
    tiny = run / "tiny"
    tiny.mkdir(parents=True)
    (tiny / "lref_tiny.json").write_text("{}")
    bm25 = write_metrics(run / "eval" / "bm25", name="bm25", scorer="bm25", macro_f1=None, n_pairs=40)
    bm25_ndcg = {"ndcg@10": 0.71234, "over_grading_rate": None}
    (bm25 / "metrics.json").write_text(json.dumps({**json.loads((bm25 / "metrics.json").read_text()), **bm25_ndcg}))
    dpo = write_metrics(run / "eval" / "dpo", name="dpo", scorer="llm", macro_f1=0.25, over_grading_rate=0.125)
    (dpo / "confusion.png").write_bytes(b"png")
    argv = ["summary", str(bm25), str(dpo), "--out", str(run), "--judge", str(tiny), "--data", "D", "--query-ids", "Q"]
    assert main(argv) == 0
    text = (run / "summary.md").read_text()
    assert capsys.readouterr().out.startswith(text)
    assert "| bm25 | bm25 | 0.7123 | n/a | n/a | n/a | 40 |" in text
    assert "| dpo | llm | n/a | 0.2500 | 0.1250 | n/a | n/a |" in text
    assert "- eval/dpo/: confusion.png" in text and "- summary.png" in text and (run / "summary.png").stat().st_size
    assert "tiny randomly initialised model" in text
    assert "lref run recipes/qwen2.5-1.5b-lora.yaml" in text and "--set data.dir=D" in text
    assert "lref eval --scorer llm --endpoint http://" in text and "--query-ids Q" in text
    (tiny / "lref_tiny.json").unlink()  # a real judge: no warning, the commands stay
    main(argv)
    text = (run / "summary.md").read_text()
    assert "randomly initialised" not in text and f"The judge is {tiny}." in text


def test_quickstart_recipe_smoke(slice_of, tiny_bert, tmp_path, capsys):
    """The whole quickstart (select -> SFT -> Multi-CoT -> DPO -> eval -> ablation -> distill -> summary) on 12
    queries, with steps cut by overrides and a tiny BERT as the students' base, through `lref run`."""
    from lref.cli import main

    data = slice_of(tmp_path / "data", 12)
    out = tmp_path / "qs"
    cut = ["train.sft_steps=2", "train.mcot_steps=1", "train.dpo_steps=1", "data.budget=24", "data.diversity_pool=40"]
    cut += ["train.mcot_rows=6", "train.dpo_pairs=6", "eval.queries=1", "eval.cot_tokens=4", "data.holdout=0.25"]
    cut += ["distill.steps=2", f"distill.base={tiny_bert}", "distill.top_n=1"]
    sets = [f"data.dir={data}", "stages.0.args.vocab_size=600", *cut]
    assert main(["run", "recipes/quickstart.yaml", "--out", str(out), *[x for s in sets for x in ("--set", s)]]) == 0
    printed = capsys.readouterr().out
    stages = yaml.safe_load(Path("recipes/quickstart.yaml").read_text())["stages"]
    n = len(stages)
    assert re.search(rf"^stage 1/{n} init-tiny \(elapsed 0\.0s, about \S+ left\)$", printed, re.M)
    assert re.search(rf"^stage {n}/{n} summary done in \S+; the run took \S+$", printed, re.M)
    assert re.search(r"^  stage 1/\d+ split \(elapsed ", printed, re.M)  # the nested distill recipe, indented
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
    # distill-quick: the LTR has no student features (zero-shot MiniLM cosine, BM25, catalogue), so no folds
    assert ltr["ranker"] is None and ltr["recall"] is None and not ltr["ranker_folds"] and not ltr["recall_folds"]
    table = (d / "comparison.md").read_text()
    assert all(
        name in table for name in ("bm25", "minilm-zero-shot", "ce-gold-only", "ltr-pipeline", "ce-gold-only-int8")
    )
    # the summary, last: every scorer in one table, the PNGs, and what the tiny judge's rows mean
    summary = (out / "summary.md").read_text()
    assert summary in printed
    rows = [x.split(" | ")[0].lstrip("| ") for x in summary.splitlines() if x.startswith("| ") and "---" not in x]
    names = ["bm25", "base", "sft", "mcot", "dpo", "minilm-zero-shot", "ce-gold-only", "ce-teacher+gold"]
    assert rows == ["run", *names, "bi-teacher+gold", "ltr-pipeline", "ce-gold-only-int8"]
    dpo_row = next(x for x in summary.splitlines() if x.startswith("| dpo |"))
    m = json.loads((out / "eval" / "dpo" / "metrics.json").read_text())
    assert f"| {m['ndcg@10']:.4f} | {m['macro_f1']:.4f} | {m['over_grading_rate']:.4f} |" in dpo_row
    assert "- ablation.png\n" in summary and "- distill/: comparison.png" in summary
    assert "- eval/dpo/: confusion.png, ndcg_per_query.png, reliability.png\n" in summary
    assert "tiny randomly initialised model" in summary and "recipes/qwen2.5-1.5b-lora.yaml" in summary
