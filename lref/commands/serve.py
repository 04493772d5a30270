"""`lref serve`: vLLM's OpenAI server with multi-LoRA and prefix caching on a GPU, or the embedded CPU server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lref.commands.args import Command, arg


@dataclass(kw_only=True)
class ServeArgs:
    model: str = arg("base model folder or Hub id")
    lora: list[str] = arg("a LoRA adapter (repeatable)", [], action="append", metavar="NAME=PATH")
    host: str = arg("interface to listen on (0.0.0.0 for all)", "127.0.0.1")
    port: int = arg("port to listen on", 8000)
    api_key: str | None = arg("require this key as `Authorization: Bearer KEY` on /v1 routes", None)
    engine: Literal["auto", "vllm", "embedded"] = arg("auto: vLLM where it is installed and a GPU is seen", "auto")
    served_model_name: str | None = arg("name of the base model in /v1/models (default: --model)", None)
    max_batch: int = arg("embedded: most prompts in one forward pass", 32)
    dry_run: bool = arg("vllm: print the command instead of running it", False)


def parse_loras(items: list[str]) -> dict[str, str]:
    from lref.config import ConfigError

    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--lora {item!r}: expected NAME=PATH")
        if name in out:
            raise ConfigError(f"--lora {item!r}: the name {name!r} is given twice")
        out[name] = path
    return out


def cmd_serve(args: ServeArgs, extra: list[str]) -> int:
    import os
    import shlex

    from lref.config import ConfigError
    from lref.serve.vllm_cmd import pick_engine, vllm_command

    loras = parse_loras(args.lora)
    extra = list(extra)
    if extra and extra[0] == "--":
        extra = extra[1:]
    engine = pick_engine(args.engine)
    if engine == "vllm":
        if args.served_model_name:
            extra = ["--served-model-name", args.served_model_name, *extra]
        cmd = vllm_command(args.model, loras, args.host, args.port, args.api_key, extra)
        print(shlex.join(cmd), flush=True)
        if args.dry_run:
            return 0
        os.execvp(cmd[0], cmd)  # replaces this process; vLLM handles signals from here on
    if extra:
        raise ConfigError(f"unknown flags {extra} are vLLM flags, but the embedded engine serves here")
    for name, path in loras.items():
        if not os.path.isdir(path):
            raise FileNotFoundError(f"--lora {name}={path}: no such adapter folder")
    from lref.serve.embedded import serve

    print(
        f"lref: embedded server for {[args.served_model_name or args.model, *loras]} on http://{args.host}:{args.port}"
    )
    serve(args.model, loras, args.host, args.port, args.api_key, args.served_model_name, args.max_batch)
    return 0


COMMANDS = [
    Command(
        "serve",
        ServeArgs,
        cmd_serve,
        "serve a model and its LoRA adapters over the OpenAI API (vLLM on GPU, embedded on CPU)",
        details="Flags lref does not know are passed to `vllm serve` (e.g. --tensor-parallel-size 2).",
        accepts_extra=True,
    )
]
