"""Where and how wide a batch job runs on Ray: the flags (`RayArgs`) and the library's `RayConfig`.

Each field's help text is in its metadata, so the command layer builds `--ray`, `--ray-address`, ... from
these dataclasses as it builds every other flag.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields


def _flag(help: str, default):
    return field(default=default, metadata={"help": help})


@dataclass(kw_only=True)
class RayArgs:
    """The flags of a batch command that can run on Ray Data."""

    ray: bool = _flag("run the job on Ray Data; --out is then a folder of Parquet shards (docs/scale-out.md)", False)
    ray_address: str | None = _flag("join this Ray cluster (auto, ray://head:10001); default: a local Ray", None)
    concurrency: int = _flag("with --ray: actors, each loading the model once", 1)
    num_cpus: float = _flag("with --ray: CPUs per actor", 1.0)
    num_gpus: float = _flag("with --ray: GPUs per actor", 0.0)


@dataclass(kw_only=True)
class RayResumeArgs(RayArgs):
    """`RayArgs` for commands that had no `--resume`: keep the complete output shards."""

    resume: bool = _flag("with --ray: keep the complete output shards and compute the rest", False)


@dataclass
class RayConfig:
    ray_address: str | None = _flag("the cluster to join; None: a local Ray (or the one already running)", None)
    concurrency: int = _flag("actors, each loading the model once", 1)
    num_cpus: float = _flag("CPUs per actor", 1.0)
    num_gpus: float = _flag("GPUs per actor", 0.0)
    batch_size: int = _flag("rows per batch handed to an actor", 64)
    resume: bool = _flag("keep the complete output shards", False)
    chunk_rows: int = _flag("input rows per read task", 1000)
    progress: bool = _flag("show Ray Data's progress bars", True)

    @classmethod
    def from_args(cls, args, **overrides) -> RayConfig:
        """The config from a command's flags (fields it lacks keep their defaults); `overrides` win."""
        values = {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}
        return cls(**{**values, **overrides})
