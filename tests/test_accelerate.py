"""The SFT stage runs unchanged as a 2-process CPU (gloo) job under `accelerate launch`."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_sft_under_accelerate_launch_two_cpu_processes(tiny_model, esci_slice, tmp_path):
    out = tmp_path / "sft"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ROOT / "recipes/accelerate/cpu_gloo_2proc.yaml"),
        "-m", "lref.cli", "sft",
        "--data", str(esci_slice), "--model", str(tiny_model), "--max-steps", "2", "--batch-size", "2",
        "--max-product-tokens", "32", "--no-packing", "--save-steps", "2", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2
    assert proc.stdout.count("sft: 2 steps") == 2  # both processes ran the stage
    assert (out / "adapter" / "adapter_config.json").exists() and (out / "model" / "config.json").exists()
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(log) == 1 and log[0]["train_loss"] > 0  # written once, by the main process
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
