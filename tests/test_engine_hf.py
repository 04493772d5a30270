import numpy as np
import pytest
import torch

from lref.data import load_dir, render_product
from lref.engines.base import distribution
from lref.engines.hf import HFEngine
from lref.labels import ESCI
from lref.prompts import judgment_messages


@pytest.fixture(scope="module")
def engine(tiny_model):
    return HFEngine.from_pretrained(tiny_model, scheme="esci", batch_size=4)


@pytest.fixture(scope="module")
def prompts(esci_slice, engine):
    c = load_dir(esci_slice)
    js = c.judgments[:9]
    return [
        judgment_messages(j.query, render_product(c.products[j.product_id], 40 + 7 * i), ESCI)
        for i, j in enumerate(js)
    ]


def test_distribution_math():
    r = distribution([0.0, 0.0, 0.0, np.log(3.0)], ESCI)
    assert np.allclose(r.probs, [1 / 6, 1 / 6, 1 / 6, 1 / 2])
    # expected grade (3 + 2 + 1) / 6 = 1.0 -> normalised 1/3; argmax is I
    assert r.score == pytest.approx(1 / 3) and r.label == "I" and r.grade == 0


def test_scores_equal_softmax_of_plain_forward(engine, prompts):
    results = engine.score(prompts)
    tok = engine.tokenizer
    for p, r in zip(prompts, results, strict=True):
        ids = torch.tensor([tok(engine.render(p), add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logits = engine.model(input_ids=ids).logits[0, -1]
        ref = torch.softmax(logits[engine.verbalizer_ids].double(), -1).numpy()
        assert np.allclose(r.probs, ref, atol=1e-6)
        assert 0.0 <= r.score <= 1.0
        assert r.label == ESCI.labels[int(ref.argmax())]
        assert r.score == pytest.approx(float((ref * np.array([3, 2, 1, 0])).sum()) / 3)


def test_batched_equals_one_by_one(engine, prompts):
    lengths = {len(engine.encode([p])[0]) for p in prompts}
    assert len(lengths) > 3  # the batch really needs padding
    batched = engine.score(prompts)
    single = [engine.score([p])[0] for p in prompts]
    for b, s in zip(batched, single, strict=True):
        assert np.allclose(b.probs, s.probs, atol=1e-5)


def test_no_grad_and_eval_mode(engine, prompts):
    engine.score(prompts[:2])
    assert not engine.model.training
    assert all(p.grad is None for p in engine.model.parameters())


def test_generate_returns_text_per_prompt(engine, prompts):
    out = engine.generate(prompts[:3], max_new_tokens=4)
    assert len(out) == 3 and all(isinstance(t, str) for t in out)
    again = engine.generate(prompts[:3], max_new_tokens=4)
    assert out == again  # greedy decoding is deterministic
