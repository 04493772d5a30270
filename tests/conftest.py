"""Shared fixtures: the test environment, a small slice of esci150, and a tiny local model.

The environment is set here, before any library is imported, so tests never reach a hub and use a
fixed number of threads.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["ANONYMIZED_TELEMETRY"] = "False"
os.environ["MPLBACKEND"] = "Agg"
os.environ.setdefault("TQDM_DISABLE", "1")
# the on-disk embedding cache of this test run: fresh, shared by subprocesses, removed at exit
os.environ["LREF_EMBED_CACHE"] = tempfile.mkdtemp(prefix="lref-embed-cache-")
atexit.register(shutil.rmtree, os.environ["LREF_EMBED_CACHE"], True)

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ESCI150 = Path(os.environ.get("LREF_ESCI150", ROOT.parent / "shared" / "data" / "esci150"))


@pytest.fixture(scope="session")
def esci150() -> Path:
    if not (ESCI150 / "judgments.tsv").exists():
        pytest.skip(f"esci150 not found at {ESCI150} (set LREF_ESCI150)")
    return ESCI150


def write_slice(src: Path, dst: Path, n_queries: int) -> Path:
    """The first `n_queries` queries of an esci150-layout folder, with only their products."""
    dst.mkdir(parents=True, exist_ok=True)
    lines = (src / "judgments.tsv").read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    qids = sorted({r.split("\t")[0] for r in rows})[:n_queries]
    keep = [r for r in rows if r.split("\t")[0] in qids]
    (dst / "judgments.tsv").write_text("\n".join([header, *keep]) + "\n", encoding="utf-8")
    qlines = (src / "queries.tsv").read_text(encoding="utf-8").splitlines()
    (dst / "queries.tsv").write_text(
        "\n".join([qlines[0], *[q for q in qlines[1:] if q.split("\t")[0] in qids]]) + "\n", encoding="utf-8"
    )
    pids = {r.split("\t")[2] for r in keep}
    with (src / "products.jsonl").open(encoding="utf-8") as f, (dst / "products.jsonl").open("w") as out:
        for line in f:
            if json.loads(line)["product_id"] in pids:
                out.write(line)
    return dst


@pytest.fixture(scope="session")
def slice_of(esci150):
    """`slice_of(dst, n)`: the first n esci150 queries written to `dst` (tests/serve has a conftest of its own,
    so test modules take this fixture rather than importing `conftest`)."""
    return lambda dst, n_queries: write_slice(esci150, dst, n_queries)


@pytest.fixture(scope="session")
def esci_slice(esci150, tmp_path_factory) -> Path:
    """Four real esci150 queries with their judged products."""
    return write_slice(esci150, tmp_path_factory.mktemp("esci_slice"), 4)


@pytest.fixture(scope="session")
def tiny_model(esci_slice, tmp_path_factory) -> Path:
    from lref.models import init_tiny

    return init_tiny(tmp_path_factory.mktemp("tiny"), esci_slice, vocab_size=600)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A randomly initialised one-layer BERT (hidden 32) with MiniLM's tokenizer, saved as a student base.

    The students' code paths are the same as with MiniLM (a fresh head for the cross-encoder, mean
    pooling for the bi-encoder) at a fraction of the CPU time; one test below still uses real MiniLM.
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from lref.rag.embedder import DEFAULT_MODEL, resolve_model_path

    torch.manual_seed(0)
    cfg = BertConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        hidden_dropout_prob=0.0,  # no dropout: every step sees the same batch, so the loss must fall
        attention_probs_dropout_prob=0.0,
    )
    path = tmp_path_factory.mktemp("tiny_bert")
    BertModel(cfg).save_pretrained(path)
    AutoTokenizer.from_pretrained(resolve_model_path(DEFAULT_MODEL)).save_pretrained(path)
    return str(path)
