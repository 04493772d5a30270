"""The `vllm serve` command line that `lref serve --engine vllm` runs, and the choice between vLLM and embedded.

The command serves the base model with every LoRA adapter (`--enable-lora --lora-modules NAME=PATH ...`),
prefix caching on, and `--logprobs-mode processed_logprobs`, so that `allowed_token_ids` restricts the
returned top logprobs to the verbalizers (the `openai` engine relies on it when the server has no
`logprob_token_ids`). Flags lref does not know pass through unchanged and win over lref's defaults.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import sys
from pathlib import Path

log = logging.getLogger(__name__)

# The LoRA ranks vLLM accepts for --max-lora-rank.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def _has_flag(args: list[str], *names: str) -> bool:
    return any(a == n or a.startswith(n + "=") for a in args for n in names)


def lora_rank(path: str | Path) -> int | None:
    cfg = Path(path) / "adapter_config.json"
    if not cfg.exists():
        return None
    try:
        return int(json.loads(cfg.read_text())["r"])
    except (ValueError, KeyError, TypeError):
        return None


def vllm_command(
    model: str,
    loras: dict[str, str] | None = None,
    host: str | None = None,
    port: int = 8000,
    api_key: str | None = None,
    extra: list[str] | None = None,
    executable: str | None = None,
) -> list[str]:
    """argv of `vllm serve` for this model, adapters and flags (first item: the program to exec)."""
    extra = list(extra or [])
    if executable is None:
        found = shutil.which("vllm")
        prog = [found] if found else [sys.executable, "-m", "vllm.entrypoints.cli.main"]
    else:
        prog = [executable]
    cmd = [*prog, "serve", str(model), "--port", str(port)]
    if host:
        cmd += ["--host", host]
    if api_key:
        cmd += ["--api-key", api_key]
    if not _has_flag(extra, "--enable-prefix-caching", "--no-enable-prefix-caching"):
        cmd.append("--enable-prefix-caching")
    if not _has_flag(extra, "--logprobs-mode"):
        cmd += ["--logprobs-mode", "processed_logprobs"]
    if loras:
        cmd += ["--enable-lora", "--lora-modules", *(f"{n}={p}" for n, p in loras.items())]
        ranks = [r for r in (lora_rank(p) for p in loras.values()) if r]
        if ranks and not _has_flag(extra, "--max-lora-rank"):
            need = max(ranks)
            cmd += ["--max-lora-rank", str(next((r for r in VLLM_LORA_RANKS if r >= need), need))]
        if not _has_flag(extra, "--max-loras"):
            cmd += ["--max-loras", str(len(loras))]
    return cmd + extra


def vllm_available() -> bool:
    """vLLM importable and a CUDA GPU present (checked without importing vLLM)."""
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def pick_engine(engine: str) -> str:
    if engine == "auto":
        return "vllm" if vllm_available() else "embedded"
    return engine
