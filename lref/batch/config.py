"""`RayConfig`: where and how wide a batch job runs on Ray. Each field's help text is in its metadata."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields


@dataclass
class RayConfig:
    ray: bool = field(default=False, metadata={"help": "run the job on Ray Data (output: a folder of Parquet shards)"})
    ray_address: str | None = field(
        default=None,
        metadata={"help": "join this Ray cluster (e.g. ray://head:10001 or auto); default: start a local one"},
    )
    concurrency: int = field(default=1, metadata={"help": "Ray actors, each loading the model once"})
    num_cpus: float = field(default=1.0, metadata={"help": "CPUs per Ray actor"})
    num_gpus: float = field(default=0.0, metadata={"help": "GPUs per Ray actor"})
    batch_size: int = field(default=64, metadata={"help": "rows per batch handed to an actor"})
    resume: bool = field(default=False, metadata={"help": "skip the output shards that are complete"})
    chunk_rows: int = field(default=1000, metadata={"help": "input rows per read task (and per in-memory shard)"})
    progress: bool = field(default=True, metadata={"help": "show Ray Data's progress bars"})

    @classmethod
    def from_args(cls, args: argparse.Namespace, **overrides) -> RayConfig:
        """The config from parsed flags (missing ones keep their defaults)."""
        values = {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}
        return cls(**{**values, **overrides})


# the flags a command adds; `--batch-size` and `--resume` are left to commands that already have them
FLAGS = ("ray", "ray_address", "concurrency", "num_cpus", "num_gpus")


def add_ray_flags(parser: argparse.ArgumentParser, names: tuple[str, ...] = FLAGS) -> None:
    """Add `--ray`, `--ray-address`, ... to a subcommand, with the help text of the dataclass fields."""
    group = parser.add_argument_group("Ray Data (batch at scale)")
    for f in fields(RayConfig):
        if f.name not in names:
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            group.add_argument(flag, action="store_true", help=f.metadata["help"])
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            shown = f" (default {f.default})" if f.default is not None else ""
            group.add_argument(flag, type=kind, default=None, help=f.metadata["help"] + shown)
