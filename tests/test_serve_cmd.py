"""`lref serve`: the vLLM command line it builds, engine choice, and a real-vLLM run where CUDA and vLLM exist."""

import importlib.util
import json
import subprocess
import sys
import time

import pytest

from lref.cli import main
from lref.serve.vllm_cmd import pick_engine, vllm_command


def _adapter_dir(tmp_path, name, r):
    d = tmp_path / name
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"r": r, "peft_type": "LORA"}))
    return str(d)


def test_vllm_command_with_two_adapters(tmp_path):
    rel, tag = _adapter_dir(tmp_path, "rel", 8), _adapter_dir(tmp_path, "tag", 24)
    cmd = vllm_command("Qwen/Qwen3-0.6B", {"relevance": rel, "tagger": tag}, "0.0.0.0", 9000, "k", executable="vllm")
    assert cmd[:3] == ["vllm", "serve", "Qwen/Qwen3-0.6B"]
    joined = " ".join(cmd)
    assert "--host 0.0.0.0" in joined and "--port 9000" in joined and "--api-key k" in joined
    assert "--enable-prefix-caching" in cmd and "--enable-lora" in cmd
    i = cmd.index("--lora-modules")
    assert cmd[i + 1 : i + 3] == [f"relevance={rel}", f"tagger={tag}"]
    assert cmd[cmd.index("--max-lora-rank") + 1] == "32"  # smallest vLLM rank >= 24
    assert cmd[cmd.index("--max-loras") + 1] == "2"
    assert cmd[cmd.index("--logprobs-mode") + 1] == "processed_logprobs"


def test_vllm_command_passes_flags_through_and_lets_them_win():
    extra = ["--tensor-parallel-size", "2", "--logprobs-mode=raw_logprobs", "--no-enable-prefix-caching"]
    cmd = vllm_command("m", None, None, 8000, None, extra, executable="vllm")
    assert cmd[-4:] == extra
    assert "--enable-prefix-caching" not in cmd and "--enable-lora" not in cmd and "--api-key" not in cmd
    assert cmd.count("--logprobs-mode") == 0 and "--host" not in cmd


def test_serve_cli_dry_run_prints_the_command(tmp_path, capsys):
    rel = _adapter_dir(tmp_path, "rel", 16)
    argv = ["serve", "--engine", "vllm", "--model", "base", "--lora", f"rel={rel}", "--port", "8123", "--dry-run"]
    assert main([*argv, "--max-model-len", "4096", "--dtype=float32"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert " serve base --port 8123 " in line and f"--lora-modules rel={rel}" in line
    assert line.endswith("--max-model-len 4096 --dtype=float32")


def test_serve_cli_rejects_bad_input(tmp_path, capsys):
    assert main(["serve", "--engine", "vllm", "--model", "m", "--lora", "no-equals", "--dry-run"]) == 2
    assert "NAME=PATH" in capsys.readouterr().err
    assert main(["serve", "--engine", "embedded", "--model", "m", "--tensor-parallel-size", "2"]) == 2
    assert "vLLM flags" in capsys.readouterr().err
    assert main(["serve", "--engine", "embedded", "--model", "m", "--lora", f"x={tmp_path / 'missing'}"]) == 2
    with pytest.raises(SystemExit):  # other commands still refuse unknown flags
        main(["score", "--data", "d", "--model", "m", "--out", "o", "--bogus"])


def test_auto_picks_embedded_without_vllm_or_gpu():
    import torch

    want = "vllm" if importlib.util.find_spec("vllm") and torch.cuda.is_available() else "embedded"
    assert pick_engine("auto") == want
    assert pick_engine("embedded") == "embedded" and pick_engine("vllm") == "vllm"


def _has_cuda_and_vllm() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(not _has_cuda_and_vllm(), reason="needs vLLM and a CUDA GPU")
def test_real_vllm_matches_hf(tiny_model, esci_slice, tmp_path):
    """`lref serve --engine vllm` on the tiny model: the openai engine reads the same distributions as hf."""
    import socket

    import httpx
    import numpy as np

    from lref.data import load_dir, render_product
    from lref.engines.hf import HFEngine
    from lref.engines.openai import OpenAIEngine
    from lref.labels import ESCI
    from lref.prompts import judgment_messages

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-m", "lref.cli", "serve", "--engine", "vllm", "--model", str(tiny_model)]
    argv += ["--port", str(port), "--dtype", "float32", "--gpu-memory-utilization", "0.3", "--enforce-eager"]
    proc = subprocess.Popen(argv, stdout=open(tmp_path / "vllm.log", "w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 600
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "vllm.log").read_text()[-3000:]
            time.sleep(2)
        c = load_dir(esci_slice)
        prompts = [
            judgment_messages(j.query, render_product(c.products[j.product_id], 60), ESCI) for j in c.judgments[:8]
        ]
        hf = HFEngine.from_pretrained(tiny_model)
        ref = hf.score(prompts)
        for tok in (hf.tokenizer, None):
            got = OpenAIEngine(f"http://127.0.0.1:{port}/v1", str(tiny_model), tokenizer=tok).score(prompts)
            for r, g in zip(ref, got, strict=True):
                assert np.allclose(r.probs, g.probs, atol=1e-3)
    finally:
        proc.terminate()
        proc.wait(60)
