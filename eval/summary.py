"""The end-of-run summary of a pipeline run (`lref summary`, the quickstart's last stage).

One table of every scorer evaluated on the held-out queries (BM25, the judge after each training stage, the
students and the LTR pipeline), built from the eval runs' `metrics.json` with `report.compare_runs`; the
PNG reports of the run folder; and what the judge's rows mean: when the judge is the tiny random model that
`lref init-tiny` writes (a folder with `lref_tiny.json`), they only show that the pipeline runs, so the
summary says so and gives the commands that run a real model.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lref.eval.report import compare_runs, plot_comparison

log = logging.getLogger(__name__)

SUMMARY_KEYS = ["scorer", "ndcg@10", "macro_f1", "over_grading_rate", "n_queries", "n_pairs"]
TINY_MARKER = "lref_tiny.json"


def is_tiny_model(model: str | Path | None) -> bool:
    """True for a model folder written by `lref init-tiny` (random weights, a tokenizer trained on the data)."""
    return model is not None and (Path(model) / TINY_MARKER).is_file()


def real_model_commands(data: str, holdout: str) -> list[str]:
    """The commands that run the same pipeline, or the same evaluation, with a real judge."""
    return [
        "lref run recipes/qwen2.5-1.5b-lora.yaml --out runs/qwen15 --set model.path=Qwen/Qwen2.5-1.5B-Instruct"
        f" --set data.dir={data}   # on a GPU: SFT, Multi-CoT and DPO of a real model with LoRA",
        f"lref eval --scorer llm --endpoint http://HOST:8000/v1 --model SERVED_MODEL --data {data} "
        f"--query-ids {holdout} --out runs/served   # a served model (vLLM or `lref serve`) on the same queries",
    ]


def judge_note(judge: str | Path | None, data: str, holdout: str) -> list[str]:
    """What the judge's rows show, and how to run a real judge."""
    if is_tiny_model(judge):
        lines = [
            f"**The judge here is a tiny randomly initialised model** ({judge}, written by `lref init-tiny`): on CPU "
            "the quickstart trains it briefly, so its rows (base, sft, mcot, dpo) only show that every stage of the "
            "pipeline runs end to end; they say nothing about the quality of LREF. The students and the LTR learn "
            "mostly from the gold grades (the placeholder teacher gets a low weight), so their rows are real "
            "measurements of those small models.",
        ]
    else:
        lines = [f"The judge is {judge}." if judge else "The judge is not named."]
    lines += ["", "To run a real model:", "", "```"] + real_model_commands(data, holdout) + ["```"]
    return lines


def png_reports(run_dir: Path) -> list[str]:
    """The PNGs under the run folder, one Markdown line per folder (relative to the run folder), sorted."""
    by_dir: dict[str, list[str]] = {}
    for p in sorted(run_dir.rglob("*.png")):
        rel = p.relative_to(run_dir)
        by_dir.setdefault(str(rel.parent), []).append(rel.name)
    lines = [f"- {name}" for name in by_dir.pop(".", [])]
    return lines + [f"- {folder}/: {', '.join(names)}" for folder, names in sorted(by_dir.items())]


def summary_markdown(
    runs: list[Path], run_dir: Path, judge: str | None = None, data: str = "DATA", holdout: str = "HOLDOUT"
) -> str:
    """The summary as Markdown: the table of `runs`, the PNGs under `run_dir` and the judge note."""
    intro = f"Every scorer on the held-out queries of {run_dir} (n/a: the scorer gives no grades, so no such rate)."
    md = ["# Run summary", "", intro, ""]
    md.append(compare_runs(runs, SUMMARY_KEYS).rstrip("\n"))
    md += ["", "## Reports", ""]
    md += png_reports(run_dir) or ["- (none)"]
    md += ["", "## The judge", ""] + judge_note(judge, data, holdout)
    return "\n".join(md) + "\n"


def write_summary(
    runs: list[Path], run_dir: Path, judge: str | None = None, data: str = "DATA", holdout: str = "HOLDOUT"
) -> str:
    """Write `run_dir/summary.png` (the metrics of every run) and `run_dir/summary.md`; return the Markdown."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    plot_comparison(runs, run_dir / "summary.png")
    text = summary_markdown(runs, run_dir, judge, data, holdout)
    (run_dir / "summary.md").write_text(text, encoding="utf-8")
    log.info("wrote the summary of %d runs to %s", len(runs), run_dir / "summary.md")
    return text
