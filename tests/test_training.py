"""SFT, DPO and Multi-CoT on the tiny model: losses logged, weights moved, a learnable rule learned."""

import json
import random

import numpy as np
import pytest

from lref.commands.stage_eval import evaluate_model, harness_evaluator
from lref.data import Corpus, Judgment, Product
from lref.labels import BINARY, ESCI
from lref.train.dpo import dpo_config, mine_overgraded, train_dpo
from lref.train.mcot import AttributeTeacher, build_rationales, cot_score, slot_label
from lref.train.sft import sft_config, sft_dataset, train_sft
from lref.train.stage import LoraSpec

WORDS = {"E": ["apple", "pear", "plum"], "I": ["zebra", "tiger", "lion"]}


def synthetic(n: int, seed: int, labels=("E", "I"), scheme=ESCI):
    """Pairs whose label is set by the product's title word: fruit -> E, animal -> I."""
    rng = random.Random(seed)
    recs, products, judgments = [], {}, []
    for i in range(n):
        lab = labels[i % len(labels)]
        word = rng.choice(WORDS["E" if lab in ("E", "yes") else "I"])
        pid = f"p{seed}-{i}"
        products[pid] = Product(pid, f"{word} {word}")
        rec = {
            "query_id": f"q{i % 4}",
            "query": "fresh fruit",
            "product_id": pid,
            "product_text": f"Title: {word} {word}",
        }
        recs.append({**rec, "label": lab, "grade": scheme.grade_of(lab)})
        judgments.append(Judgment(rec["query_id"], rec["query"], pid, lab, scheme.grade_of(lab)))
    return recs, Corpus(judgments, products, scheme)


def fast(out, **kw):
    base = dict(logging_steps=1, save_strategy="no", per_device_train_batch_size=8, max_length=512, packing=False)
    base.update(kw)
    return sft_config(out, **base)


def test_sft_lora_logs_loss_and_changes_adapter(tiny_model, tmp_path):
    recs, _ = synthetic(16, 0)
    s = train_sft(tiny_model, sft_dataset(recs, ESCI), tmp_path, fast(tmp_path, max_steps=3), LoraSpec(r=4))
    log = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]
    assert s["steps"] == 3 and s["trainable_params"] > 0
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and any(float(v.abs().sum()) > 0 for v in lora_b)  # lora_B starts at zero
    assert (tmp_path / "model" / "config.json").exists()


def test_sft_learns_a_rule_and_evaluates_each_epoch(tiny_model, tmp_path):
    from sklearn.metrics import roc_auc_score

    from lref.engines.hf import HFEngine
    from lref.prompts import judgment_messages

    # binary scheme: short instructions, so the rule's word is a large share of the prompt
    recs, _ = synthetic(64, 1, labels=("yes", "no"), scheme=BINARY)
    val_recs, val = synthetic(24, 2, labels=("yes", "no"), scheme=BINARY)
    cfg = fast(tmp_path, num_train_epochs=6, learning_rate=1e-3, logging_steps=8)
    s = train_sft(
        tiny_model, sft_dataset(recs, BINARY), tmp_path, cfg, LoraSpec(enabled=False), evaluate=harness_evaluator(val)
    )
    evals = [json.loads(x)["eval"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert len(evals) == 6  # one per epoch, with the harness metrics
    assert set(evals[0]) >= {"macro_f1", "accuracy", "over_grading_rate", "ndcg@10"}

    def auc(model_dir):
        engine = HFEngine.from_pretrained(model_dir, scheme=BINARY)
        scored = engine.score([judgment_messages(r["query"], r["product_text"], BINARY) for r in val_recs])
        return roc_auc_score([r["label"] == "yes" for r in val_recs], [p.probs[0] for p in scored])

    # chance is 0.5: the trained judge ranks held-out pairs by the rule (fruit -> yes, animal -> no)
    assert auc(s["model"]) >= 0.8


def test_sft_resumes_after_a_kill(tiny_model, tmp_path):
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise KeyboardInterrupt

    recs, _ = synthetic(48, 3)
    cfg = dict(max_steps=4, save_strategy="steps", save_steps=2)
    with pytest.raises(KeyboardInterrupt):
        train_sft(
            tiny_model, sft_dataset(recs, ESCI), tmp_path, fast(tmp_path, **cfg), LoraSpec(r=4), callbacks=[Kill()]
        )
    s = train_sft(tiny_model, sft_dataset(recs, ESCI), tmp_path, fast(tmp_path, **cfg), LoraSpec(r=4))
    assert s["resumed_from"].endswith("checkpoint-2") and s["steps"] == 4
    log = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # the killed run logged steps 1-2 (it died in step 3, after checkpoint-2); the resumed run logged 3 and 4
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]


def test_mine_overgraded_hand_made():
    # ESCI order E, S, C, I
    probs = np.array(
        [
            [0.6, 0.2, 0.1, 0.1],  # gold I: top is E -> over-grade E
            [0.1, 0.5, 0.3, 0.1],  # gold C: S outranks C -> over-grade S (top too)
            [0.2, 0.1, 0.6, 0.1],  # gold S: top C is an under-grade; E outranks S -> rank mode only
            [0.7, 0.1, 0.1, 0.1],  # gold E: nothing above
        ]
    )
    gold = ["I", "C", "S", "E"]
    rank = mine_overgraded(probs, gold, ESCI, "rank")
    assert [(m["index"], m["chosen"], m["rejected"]) for m in rank] == [(0, "I", "E"), (1, "C", "S"), (2, "S", "E")]
    top = mine_overgraded(probs, gold, ESCI, "top")
    assert [m["index"] for m in top] == [0, 1]
    assert [m["index"] for m in mine_overgraded(probs, gold, ESCI, "rank", min_prob=0.3)] == [0, 1]


def test_dpo_lowers_over_grading(tiny_model, tmp_path):
    # an SFT judge that says E for everything over-grades every I pair
    recs, _ = synthetic(32, 4)
    biased = [{**r, "label": "E"} for r in recs]
    sft = train_sft(
        tiny_model,
        sft_dataset(biased, ESCI),
        tmp_path / "sft",
        fast(tmp_path / "sft", max_steps=6, learning_rate=3e-3),
        LoraSpec(enabled=False),
    )
    _, val = synthetic(16, 5)
    cfg = dpo_config(
        tmp_path / "dpo", max_steps=8, learning_rate=3e-3, logging_steps=1, save_strategy="no", loss_type=["sigmoid"]
    )
    s = train_dpo(
        sft["model"], recs, ESCI, tmp_path / "dpo", cfg, LoraSpec(enabled=False), evaluate=harness_evaluator(val)
    )
    assert s["pairs"] == 16  # the I rows, each with E as the rejected over-grade
    pairs = [json.loads(x) for x in (tmp_path / "dpo" / "pairs.jsonl").read_text().splitlines()]
    assert {(p["chosen"], p["rejected"]) for p in pairs} == {("I", "E")}
    assert s["before"]["over_grading_rate"] == pytest.approx(0.5)
    assert s["after"]["over_grading_rate"] < s["before"]["over_grading_rate"]
    losses = [
        json.loads(x)["loss"] for x in (tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines() if '"loss"' in x
    ]
    assert len(losses) == 8


def test_rationales_gold_in_slot_and_disagreeing_dropped():
    recs = [
        {"query": "red apple", "product_text": "Title: red apple", "label": "E"},  # rules derive E: agrees
        {"query": "red apple", "product_text": "Title: blue zebra", "label": "E"},  # rules derive I: dropped in RA
    ]
    teacher = AttributeTeacher()
    for kind in ("ee", "dr"):
        rows, counts = build_rationales(recs, ESCI, kind, teacher)
        assert counts["kept"] == 2 and counts["dropped_disagree"] == 0
        assert all(r["completion"][0]["content"].endswith("\nAnswer:\nE") for r in rows)
    rows, counts = build_rationales(recs, ESCI, "ra", teacher)
    assert counts == {"kind": "ra", "built": 2, "kept": 1, "dropped_disagree": 1, "dropped_no_slot": 0}
    assert slot_label(rows[0]["completion"][0]["content"], ESCI) == "E"
    assert "A judge graded this pair S" in build_rationales(recs, ESCI, "dr", teacher)[0][0]["prompt"][-1]["content"]


class FakeTeacher:
    name = "fake"

    def rationales(self, kind, items, scheme):
        return ["Looks exact. Answer: E", "no slot here", "Clearly irrelevant.\nAnswer: I"]


def test_openai_style_teacher_text_is_normalised_and_filtered():
    recs = [{"query": "q", "product_text": "t", "label": lab} for lab in ("E", "E", "S")]
    rows, counts = build_rationales(recs, ESCI, "ee", FakeTeacher())
    assert counts["kept"] == 1 and counts["dropped_no_slot"] == 1 and counts["dropped_disagree"] == 1
    assert rows[0]["completion"][0]["content"] == "Looks exact.\nAnswer:\nE"


def test_cot_score_reads_the_slot(tiny_model):
    from lref.engines.hf import HFEngine
    from lref.prompts import cot_messages

    engine = HFEngine.from_pretrained(tiny_model, batch_size=2)
    prompts = [cot_messages("red apple", "Title: red apple", ESCI), cot_messages("x", "Title: y", ESCI)]
    scored, rationales = cot_score(engine, prompts, max_new_tokens=4)
    assert len(scored) == 2 and all(abs(sum(s.probs) - 1) < 1e-6 for s in scored)
    assert all("Answer:" not in r for r in rationales)


def test_evaluate_model_keys(tiny_model):
    from lref.models import load_model

    model, tok = load_model(tiny_model)
    _, corpus = synthetic(8, 6)
    m = evaluate_model(model, tok, corpus)
    assert set(m) == {"macro_f1", "accuracy", "over_grading_rate", "under_grading_rate", "ndcg@10"}


def test_select_imcims_and_uncertainty_end_to_end(tiny_model, tmp_path):
    from lref.train.selection import SelectionSpec, select

    recs, _ = synthetic(16, 7)
    spec = SelectionSpec(methods=("imcims", "uncertainty"), budget=6, judge_steps=1, judge_fraction=0.5)
    rows, summary = select(recs, ESCI, spec, tiny_model, tmp_path, judge_config={"per_device_train_batch_size": 4})
    assert len(rows) == 6 == summary["selected"]
    assert {"im", "ci", "ms"} <= {p.name for p in tmp_path.iterdir()}  # three judges were trained
    assert sum(1 for r in rows if r["selected_by"] == "imcims") == min(summary["imcims_kept"], 6)
    for r in rows:
        assert r["selected_by"] in ("imcims", "uncertainty") and r["reason"]
        if r["selected_by"] == "imcims":
            assert "(wrong)" in r["reason"] and "CI predicted " + r["label"] in r["reason"]
