"""`lref serve`: vLLM's OpenAI server with multi-LoRA and prefix caching on a GPU, or the embedded CPU server."""

from __future__ import annotations

import argparse


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model and its LoRA adapters over the OpenAI API (vLLM on GPU, embedded on CPU)",
        description="Flags lref does not know are passed to `vllm serve` (e.g. --tensor-parallel-size 2).",
    )
    p.add_argument("--config", help="YAML file of these flags")
    p.add_argument("--model", required=True, help="base model folder or Hub id")
    p.add_argument("--lora", action="append", default=[], metavar="NAME=PATH", help="a LoRA adapter (repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require this key as `Authorization: Bearer KEY` on /v1 routes")
    p.add_argument("--engine", choices=["auto", "vllm", "embedded"], default="auto")
    p.add_argument("--served-model-name", help="name of the base model in /v1/models (default: --model)")
    p.add_argument("--max-batch", type=int, default=32, help="embedded: most prompts in one forward pass")
    p.add_argument("--dry-run", action="store_true", help="vllm: print the command instead of running it")
    p.set_defaults(func=cmd_serve, accepts_extra=True)


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


def cmd_serve(args: argparse.Namespace) -> int:
    import os
    import shlex

    from lref.config import ConfigError
    from lref.serve.vllm_cmd import pick_engine, vllm_command

    loras = parse_loras(args.lora)
    extra = list(getattr(args, "extra", []) or [])
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
