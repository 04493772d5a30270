"""The installed distribution adds only `lref` at the top level: `eval`, `rag` and `tagging` live under it."""

from __future__ import annotations

import json
import subprocess
import sys


def test_only_lref_at_the_top_level(tmp_path):
    # a neutral directory, so the checkout's own folders are not on sys.path through the current directory
    code = (
        "import importlib.util, json, sys\n"
        "import lref.eval.metrics, lref.rag.store, lref.tagging.tagger, lref.train.sft\n"
        "found = {n: importlib.util.find_spec(n) is not None for n in ('eval', 'rag', 'tagging')}\n"
        "tops = sorted({m.split('.')[0] for m in sys.modules} & {'eval', 'rag', 'tagging'})\n"
        "print(json.dumps({'found': found, 'tops': tops, 'metrics': lref.eval.metrics.__name__}))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["found"] == {"eval": False, "rag": False, "tagging": False}
    assert result["tops"] == []
    assert result["metrics"] == "lref.eval.metrics"
