"""Batch jobs on Ray Data: same rows as the single-process jobs, Parquet shards, exactly once after crashes.

One local Ray cluster (2 CPUs, loopback, no dashboard) serves the module and is stopped at its end; the
crash test's driver is a separate process that joins it and is killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lref.data import Product

ROOT = Path(__file__).resolve().parents[1]

TITLES = {
    ("Home & Kitchen", "Furniture", "Chairs"): ["oak dining chair", "velvet accent chair", "folding camp chair"],
    ("Home & Kitchen", "Kitchen", "Cookware"): ["cast iron skillet 12 inch", "nonstick frying pan", "stock pot 8 qt"],
    ("Pet Supplies", "Dogs", "Toys"): ["squeaky dog chew toy", "rope tug toy for puppies", "dog fetch ball"],
    ("Pet Supplies", "Cats", "Litter"): ["clumping cat litter 20 lb", "pine cat litter pellets", "silica cat litter"],
}


def catalogue() -> list[Product]:
    return [
        Product(f"{path[2][:3].upper()}{i}", t.title(), brand="Acme", category=list(path), rating=4.5)
        for path, titles in TITLES.items()
        for i, t in enumerate(titles)
    ]


def product_line(pid: str, title: str) -> str:
    return json.dumps({"product_id": pid, "title": title, "bullet_points": f"{title} for home use"}) + "\n"


def write_catalogue(path: Path, n: int, bad_every: int = 0, start: int = 0) -> list[str]:
    """`n` products (cycling the handmade titles) with a bad row every `bad_every` lines; returns the lines."""
    titles = [t for ts in TITLES.values() for t in ts]
    lines = []
    for i in range(start, start + n):
        if bad_every and i % bad_every == bad_every - 1:
            lines.append('{"product_id": "broken", "title": ' + "\n" if i % 2 else json.dumps({"title": "x"}) + "\n")
        else:
            lines.append(product_line(f"P{i:04d}", titles[i % len(titles)] + f" model {i}"))
    path.write_text("".join(lines), encoding="utf-8")
    return lines


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    from lref.rag.store import Store
    from lref.tagging.tagger import build_index
    from lref.tagging.taxonomy import build_from_products

    products = catalogue()
    tax = build_from_products([p.category for p in products])
    d = tmp_path_factory.mktemp("ray_store")
    build_index(Store(d), tax, products)
    tax.save(d / "taxonomy.yaml")
    return d


def make_tagger(store_dir: Path, delay: float = 0.0, die_marker: str | None = None):
    """The tagger every job uses; optionally slow, or dying once (os._exit) on its first batch, guarded by a file."""
    from lref.rag.store import Store
    from lref.tagging.tagger import Tagger
    from lref.tagging.taxonomy import Taxonomy

    tagger = Tagger(Taxonomy.load(store_dir / "taxonomy.yaml"), Store(store_dir))
    inner = tagger.tag

    def tag(products):
        if die_marker and not os.path.exists(die_marker):
            Path(die_marker).write_text(str(os.getpid()))
            os._exit(1)  # the worker process dies in the middle of a batch
        time.sleep(delay)
        return inner(products)

    tagger.tag = tag
    return tagger


@pytest.fixture(scope="module")
def ray_cluster():
    pytest.importorskip("ray")
    import ray
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def cfg(**kw):
    from lref.batch.config import RayConfig

    return RayConfig(**{"concurrency": 2, "batch_size": 4, "chunk_rows": 5, "progress": False, **kw})


# ---------------------------------------------------------------------------------------------- without Ray


def test_plan_and_read_jsonl_parquet_csv_keep_lines(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lref.batch.shards import discover, plan_file, read_chunk

    d = tmp_path / "in"
    d.mkdir()
    (d / "a.jsonl").write_text(product_line("A1", "one") + "\n" + product_line("A2", "two") + "{bad\n")
    pq.write_table(
        pa.Table.from_pylist([{"product_id": f"B{i}", "title": "t"} for i in range(5)]),
        d / "b.parquet",
        row_group_size=2,
    )
    (d / "c.tsv").write_text("product_id\ttitle\nC1\tx\nC2\ty\textra\n")
    shards = [plan_file(f, chunk_rows=2) for f in discover(d)]
    assert [(s.name, s.n_rows, len(s.chunks)) for s in shards] == [("a", 3, 2), ("b", 5, 3), ("c", 2, 1)]
    rows = {s.name: [r for c in s.chunks for r in read_chunk(c)] for s in shards}
    assert [r["line"] for r in rows["a"]] == [1, 3, 4]  # the blank line 2 is skipped, line numbers kept
    assert json.loads(rows["a"][1]["raw"])["product_id"] == "A2" and rows["a"][2]["raw"] == "{bad\n"
    assert [r["line"] for r in rows["b"]] == [1, 2, 3, 4, 5] and json.loads(rows["b"][4]["raw"])["product_id"] == "B4"
    assert rows["c"][0]["error"] is None and "line 3" in rows["c"][1]["error"] and rows["c"][1]["raw"] is None


def test_shard_names_must_not_collide_and_output_needs_resume(tmp_path):
    from lref.batch.shards import commit_shard, discover, encode, prepare_output
    from lref.data import DataError

    (tmp_path / "x.jsonl").write_text(product_line("A", "a"))
    (tmp_path / "x.parquet").write_bytes(b"")
    with pytest.raises(DataError, match="two shards would write x.parquet"):
        discover(tmp_path)
    out = tmp_path / "out"
    commit_shard(out, "x", encode([{"product_id": "A"}], {"product_id": "str"}), [])
    (out / ".y.parquet.tmp").write_bytes(b"partial")
    with pytest.raises(DataError, match="--resume"):
        prepare_output(out, resume=False)
    assert prepare_output(out, resume=True) == {"x"} and not (out / ".y.parquet.tmp").exists()


def test_collector_commits_complete_shards_once_and_counts_repeats(tmp_path):
    from lref.batch.jobs import TagJob
    from lref.batch.ray_job import Collector
    from lref.batch.shards import Shard, errors_dir, read_output

    def outcome(shard, line, pid, reason=None):
        res = None if reason else json.dumps({"product_id": pid, "topic": ["A"], "style": []})
        return {"shard": shard, "line": line, "result": res, "product_id": pid, "reason": reason}

    shards = [Shard("a", "a.jsonl", 3), Shard("b", "b.jsonl", 2), Shard("empty", "e.jsonl", 0)]
    col = Collector(tmp_path / "out", shards, TagJob(make_tagger), set())
    assert (tmp_path / "out" / "empty.parquet").exists()  # an empty shard is complete at once
    col.add(outcome("a", 3, "X"))
    col.add(outcome("a", 1, "Y"))
    col.add(outcome("b", 1, "X"))  # the same id in another shard: a duplicate, whichever commits later
    col.add(outcome("a", 1, "Y"))  # a repeat before the commit
    assert not (tmp_path / "out" / "a.parquet").exists()
    col.add(outcome("a", 2, None, reason="bad JSON"))
    assert [r["product_id"] for r in read_output(tmp_path / "out")] == ["Y", "X"]  # shard a, in line order
    col.add(outcome("a", 2, None, reason="bad JSON"))  # a repeat after the commit
    col.add(outcome("b", 2, "Z"))
    assert col.stats == {"rows": 3, "errors": 2, "duplicates": 2, "shards_written": 3} and not col.unfinished()
    errors = read_output(errors_dir(tmp_path / "out"))
    assert [(e["file"], e["line"], e["reason"]) for e in errors] == [
        ("a.jsonl", 2, "bad JSON"),
        ("b.jsonl", 1, "duplicate product_id 'X' (first one kept)"),
    ]


# ---------------------------------------------------------------------------------------------- on Ray


def test_ray_tagging_equals_single_process_and_reads_everywhere(ray_cluster, store_dir, tmp_path):
    import datasets
    import pandas as pd
    import pyarrow.parquet as pq

    from lref.batch.jobs import TAG_COLUMNS
    from lref.batch.ray_job import run_tagging
    from lref.batch.shards import errors_dir, read_output
    from lref.tagging.batch import run_batch

    src = tmp_path / "products.jsonl"
    lines = write_catalogue(src, 30, bad_every=7)
    src.write_text("".join(lines) + lines[0], encoding="utf-8")  # line 31 repeats P0000: a duplicate
    single = tmp_path / "single" / "tags.jsonl"
    run_batch(make_tagger(store_dir), src, single, batch_size=4, progress=False)
    out = tmp_path / "ray_tags"
    summary = run_tagging(lambda: make_tagger(store_dir), src, out, cfg())
    assert summary["duplicates"] == 0 and summary["shards_written"] == 1
    want = [json.loads(x) for x in single.read_text().splitlines()]
    got = read_output(out, TAG_COLUMNS)
    assert got == want  # tags, confidences, evidence: identical, in input order
    want_err = [json.loads(x) for x in single.with_name("tags.errors.jsonl").read_text().splitlines()]
    got_err = read_output(errors_dir(out))
    assert [(e["line"], e["product_id"], e["reason"]) for e in got_err] == [
        (e["line"], e["product_id"], e["reason"]) for e in want_err
    ]
    assert {e["file"] for e in got_err} == {str(src)} and any("duplicate" in e["reason"] for e in got_err)
    assert len(got) + len(got_err) == 31
    # the folder is readable as it is
    assert list(pd.read_parquet(out)["product_id"]) == [r["product_id"] for r in want]
    assert pq.read_table(out).num_rows == len(want)
    ds = datasets.load_dataset("parquet", data_dir=str(out), split="train")
    assert ds.num_rows == len(want) and ds[0]["topic"] == want[0]["topic"]


def test_ray_teacher_and_score_equal_single_process(ray_cluster, esci_slice, tiny_model, tmp_path):
    from lref.batch.jobs import SCORE_COLUMNS, TEACHER_COLUMNS
    from lref.batch.ray_job import run_pairs
    from lref.batch.shards import read_output
    from lref.data import load_dir
    from lref.distill.teacher import score_pairs
    from lref.engines.factory import make_engine
    from lref.engines.judge import LLMScorer

    corpus = load_dir(esci_slice)
    engine = make_engine(str(tiny_model), None, batch_size=4)
    pairs = [
        {
            "query_id": j.query_id,
            "query": j.query,
            "product_id": j.product_id,
            "source": "judged",
            "gold_grade": j.grade,
        }
        for j in corpus.judgments[:24]
    ]
    pairs.append({**pairs[0], "query_id": "q-missing", "product_id": "no-such-product"})
    ref = tmp_path / "teacher.jsonl"
    score_pairs(engine, corpus, pairs, ref, chunk_size=8, progress=False)
    want = {(r["query_id"], r["product_id"]): r for r in map(json.loads, ref.read_text().splitlines())}
    make = lambda: make_engine(str(tiny_model), None, batch_size=4)  # noqa: E731
    out = tmp_path / "teacher"
    s = run_pairs(make, pairs, corpus.products, out, cfg(), shard_rows=10)
    assert s["shards"] == 3 and s["rows"] == 24 and s["errors"] == 1
    got = read_output(out, TEACHER_COLUMNS)
    assert [(r["query_id"], r["product_id"]) for r in got] == [(p["query_id"], p["product_id"]) for p in pairs[:24]]
    for r in got:
        w = want[(r["query_id"], r["product_id"])]
        assert r["score"] == pytest.approx(w["score"], abs=1e-6) and r["label"] == w["label"]
        assert all(abs(r["probs"][k] - w["probs"][k]) < 1e-6 for k in w["probs"])
    # `lref score` rows: the same engine through the eval harness's scorer
    sub = corpus.subset(corpus.query_ids[:2])
    ref_scores = LLMScorer(engine).score(sub, progress=False)
    score_pairs_in = [
        {"query_id": j.query_id, "query": j.query, "product_id": j.product_id, "gold_label": j.label, "grade": j.grade}
        for j in sub.judgments
    ]
    run_pairs(make, score_pairs_in, sub.products, tmp_path / "scores", cfg(concurrency=1), style="score")
    got = read_output(tmp_path / "scores", SCORE_COLUMNS)
    assert len(got) == len(ref_scores)
    for r, w, j in zip(got, ref_scores, sub.judgments, strict=True):
        assert (r["product_id"], r["grade"], r["pred_label"]) == (j.product_id, j.grade, w["pred_label"])
        assert r["score"] == pytest.approx(w["score"], abs=1e-6)


def _input_lines(folder: Path) -> dict[tuple[str, int], str]:
    out = {}
    for f in sorted(folder.glob("*.jsonl")):
        for n, line in enumerate(f.read_text().splitlines(), start=1):
            out[(str(f), n)] = line
    return out


def _assert_exactly_once(src: Path, out: Path):
    from lref.batch.shards import errors_dir, read_output

    inputs = _input_lines(src)
    tags = read_output(out)
    errors = read_output(errors_dir(out))
    good = {json.loads(v)["product_id"] for v in inputs.values() if '"broken"' not in v and "product_id" in v}
    assert sorted(r["product_id"] for r in tags) == sorted(good)  # every good row once, no duplicate
    err_keys = [(e["file"], e["line"]) for e in errors]
    assert len(err_keys) == len(set(err_keys))
    assert len(tags) + len(errors) == len(inputs)


def test_kill9_driver_mid_run_then_resume_gives_every_row_exactly_once(ray_cluster, store_dir, tmp_path):
    from lref.batch.ray_job import run_tagging

    src = tmp_path / "shards"
    src.mkdir()
    for k in range(8):
        write_catalogue(src / f"part-{k}.jsonl", 8, bad_every=5, start=8 * k)
    out = tmp_path / "out"
    script = tmp_path / "driver.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import ray.cloudpickle, test_ray_batch as t
        ray.cloudpickle.register_pickle_by_value(t)
        from lref.batch.ray_job import run_tagging
        from pathlib import Path
        run_tagging(lambda: t.make_tagger(Path({str(store_dir)!r}), delay=0.4), Path({str(src)!r}),
                    Path({str(out)!r}), t.cfg(ray_address={ray_cluster!r}, batch_size=2, concurrency=1))
    """)
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, cwd=tmp_path, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(out.glob("*.parquet"))) < 2 and proc.poll() is None:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    committed = len(list(out.glob("*.parquet")))
    assert 0 < committed < 8, err.decode()[-2000:]  # killed mid-run: some shards done, some not
    summary = run_tagging(lambda: make_tagger(store_dir), src, out, cfg(resume=True, concurrency=1))
    assert summary["shards_skipped"] == committed and summary["shards_written"] == 8 - committed
    assert summary["duplicates"] == 0
    _assert_exactly_once(src, out)
    with pytest.raises(Exception, match="--resume"):
        run_tagging(lambda: make_tagger(store_dir), src, out, cfg())


def test_worker_dying_mid_batch_is_retried_and_nothing_is_duplicated(ray_cluster, store_dir, tmp_path):
    from lref.batch.ray_job import run_tagging

    src = tmp_path / "shards"
    src.mkdir()
    for k in range(3):
        write_catalogue(src / f"part-{k}.jsonl", 6, bad_every=4, start=6 * k)
    marker = tmp_path / "died.marker"
    out = tmp_path / "out"
    summary = run_tagging(lambda: make_tagger(store_dir, die_marker=str(marker)), src, out, cfg(concurrency=1))
    assert marker.exists()  # a worker did die in the middle of a batch
    assert summary["duplicates"] == 0 and summary["shards_written"] == 3
    _assert_exactly_once(src, out)


def test_cli_tag_ray_writes_a_shard_folder_and_resumes(ray_cluster, store_dir, tmp_path, capsys):
    from lref.batch.jobs import TAG_COLUMNS
    from lref.batch.shards import read_output
    from lref.cli import main

    src = tmp_path / "products.jsonl"
    write_catalogue(src, 10, bad_every=4)
    out = tmp_path / "tags"
    argv = ["tag", "--ray", "--concurrency", "1", "--batch-size", "4", "--products", str(src)]
    argv += ["--taxonomy", str(store_dir / "taxonomy.yaml"), "--store", str(store_dir), "--out", str(out)]
    assert main([*argv, "--kg-out", str(tmp_path / "kg.json")]) == 0
    assert "tagged 8 products in 1 shards (0 shards already done, 2 errors" in capsys.readouterr().out
    rows = read_output(out, TAG_COLUMNS)
    assert [r["product_id"] for r in rows] == [f"P{i:04d}" for i in range(10) if i % 4 != 3]
    assert all(r["topic"] and r["model"] == "retrieval" for r in rows)
    assert "P0000" in (tmp_path / "kg.json").read_text()
    assert main(argv) == 2 and "--resume" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0
    assert "tagged 0 products in 0 shards (1 shards already done" in capsys.readouterr().out
