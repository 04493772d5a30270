import json

import pytest
import yaml

from lref.config import ConfigError, apply_overrides
from lref.recipe import resolve, run_recipe, stage_argv


def test_overrides_and_references():
    tree = {"data": {"dir": "a"}, "stages": [{"command": "eval", "args": {"data": "{data.dir}", "out": "{out}/x"}}]}
    apply_overrides(tree, ["data.dir=/d", "stages.0.args.queries=3"])
    r = resolve(tree, "/run")
    assert r["stages"][0]["args"] == {"data": "/d", "out": "/run/x", "queries": 3}
    with pytest.raises(ConfigError, match="nope"):
        resolve({"stages": [{"command": "x", "args": {"a": "{nope.key}"}}]}, "o")
    with pytest.raises(ConfigError):
        apply_overrides({}, ["noequals"])


def test_stage_argv():
    argv = stage_argv(
        {"command": "compare", "args": {"positional": ["a", "b"], "out": "c", "flag": True, "no": False}}
    )
    assert argv == ["compare", "a", "b", "--out", "c", "--flag"]


def test_quickstart_recipe_smoke(esci150, tmp_path):
    out = tmp_path / "qs"
    run_recipe(
        "recipes/quickstart.yaml", out, [f"data.dir={esci150}", "eval.queries=2", "stages.0.args.vocab_size=600"]
    )
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["data"]["dir"] == str(esci150)
    for run in ("bm25", "tiny-llm"):
        assert json.loads((out / run / "metrics.json").read_text())["n_queries"] == 2
    assert "| tiny-llm |" in (out / "comparison.md").read_text()
