"""`lref serve`: the LLM judge over vLLM (GPU) or the embedded server, plus the students' rerank/search routes."""

from __future__ import annotations

import argparse
import dataclasses

from lref.serve.config import ServeConfig, parse_loras

__all__ = ["add_parsers", "cmd_serve", "parse_loras"]


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the LLM judge (OpenAI API) and the students (rerank, score, search) on one port",
        description="Serve the LLM judge over the OpenAI API (vLLM on GPU, embedded on CPU) and the distilled "
        "students over /v1/rerank, /v1/score and /v1/search. Flags lref does not know are passed to `vllm serve` "
        "(e.g. --tensor-parallel-size 2).",
    )
    help_of = {f.name: f.metadata.get("help") for f in dataclasses.fields(ServeConfig)}
    p.add_argument("--config", help="YAML file of these flags")
    p.add_argument("--model", help=help_of["model"])
    p.add_argument("--lora", action="append", default=[], metavar="NAME=PATH", help=help_of["lora"])
    p.add_argument("--ranker", metavar="[NAME=]DIR", help=help_of["ranker"])
    p.add_argument("--no-int8", dest="int8", action="store_false", help="run the cross-encoder in fp32, not int8")
    p.add_argument("--ranker-backend", choices=["torch", "onnx"], default="torch", help=help_of["ranker_backend"])
    p.add_argument("--ltr", metavar="[NAME=]DIR", help=help_of["ltr"])
    p.add_argument("--recall", metavar="[NAME=]DIR", help=help_of["recall"])
    p.add_argument("--products", metavar="FILE", help=help_of["products"])
    p.add_argument("--scheme", default="esci", help=help_of["scheme"])
    p.add_argument("--host", default="127.0.0.1", help=help_of["host"])
    p.add_argument("--port", type=int, default=8000, help=help_of["port"])
    p.add_argument("--api-key", help=help_of["api_key"])
    p.add_argument("--engine", choices=["auto", "vllm", "embedded"], default="auto", help="LLM backend")
    p.add_argument("--served-model-name", help=help_of["served_model_name"])
    p.add_argument("--max-batch", type=int, default=32, help=help_of["max_batch"])
    p.add_argument("--max-documents", type=int, default=1000, help=help_of["max_documents"])
    p.add_argument("--max-text-chars", type=int, default=20_000, help=help_of["max_text_chars"])
    p.add_argument("--max-queue", type=int, default=256, help=help_of["max_queue"])
    p.add_argument("--dry-run", action="store_true", help="vllm: print the command instead of running it")
    p.set_defaults(func=cmd_serve, accepts_extra=True)


def cmd_serve(args: argparse.Namespace) -> int:
    import os
    import shlex

    from lref.config import ConfigError
    from lref.serve.vllm_cmd import pick_engine, vllm_command

    cfg = ServeConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServeConfig)})
    loras = parse_loras(cfg.lora)
    extra = list(getattr(args, "extra", []) or [])
    if extra and extra[0] == "--":
        extra = extra[1:]
    students = cfg.ranker or cfg.ltr or cfg.recall
    engine = pick_engine(args.engine) if cfg.model else "embedded"
    if engine == "vllm":
        if students:
            raise ConfigError("--ranker/--ltr/--recall are served by the embedded engine: use --engine embedded")
        if cfg.served_model_name:
            extra = ["--served-model-name", cfg.served_model_name, *extra]
        cmd = vllm_command(cfg.model, loras, cfg.host, cfg.port, cfg.api_key, extra)
        print(shlex.join(cmd), flush=True)
        if args.dry_run:
            return 0
        os.execvp(cmd[0], cmd)  # replaces this process; vLLM handles signals from here on
    if extra:
        raise ConfigError(f"unknown flags {extra} are vLLM flags, but the embedded engine serves here")
    for name, path in loras.items():
        if not os.path.isdir(path):
            raise FileNotFoundError(f"--lora {name}={path}: no such adapter folder")
    from lref.serve.embedded import app_for, serve

    app = app_for(cfg)
    print(f"lref: serving {list(app.state.scorers)} on http://{cfg.host}:{cfg.port}", flush=True)
    serve(cfg, app)
    return 0
