"""`lref serve`: the LLM judge over vLLM (GPU) or the embedded server, plus the students' rerank/search routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lref.commands.args import Command, arg
from lref.serve.config import ServeConfig, parse_loras

__all__ = ["COMMANDS", "ServeArgs", "cmd_serve", "parse_loras"]


@dataclass(kw_only=True)
class ServeArgs(ServeConfig):
    """What to serve (`ServeConfig`), and how: the LLM backend and a dry run of the vLLM command."""

    engine: Literal["auto", "vllm", "embedded"] = arg(
        "LLM backend; auto: vLLM where it is installed and a GPU is seen", "auto"
    )
    dry_run: bool = arg("vllm: print the command instead of running it", False)


def cmd_serve(args: ServeArgs, extra: list[str]) -> int:
    import os
    import shlex

    from lref.config import ConfigError
    from lref.serve.vllm_cmd import pick_engine, vllm_command

    loras = parse_loras(args.lora)
    extra = list(extra)
    if extra and extra[0] == "--":
        extra = extra[1:]
    students = args.ranker or args.ltr or args.recall
    engine = pick_engine(args.engine) if args.model else "embedded"
    if engine == "vllm":
        if students:
            raise ConfigError("--ranker/--ltr/--recall are served by the embedded engine: use --engine embedded")
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
    from lref.serve.embedded import app_for, serve

    app = app_for(args)
    print(f"lref: serving {list(app.state.scorers)} on http://{args.host}:{args.port}", flush=True)
    serve(args, app)
    return 0


COMMANDS = [
    Command(
        "serve",
        ServeArgs,
        cmd_serve,
        "serve the LLM judge (OpenAI API) and the students (rerank, score, search) on one port",
        details="The LLM judge over the OpenAI API (vLLM on GPU, embedded on CPU) and the distilled students over "
        "/v1/rerank, /v1/score and /v1/search. Flags lref does not know are passed to `vllm serve` "
        "(e.g. --tensor-parallel-size 2).",
        accepts_extra=True,
    )
]
