"""The shared training-stage skeleton: the metrics log with the caller's per-epoch evaluation, and the summary."""

import json

from transformers import TrainerControl, TrainerState

from lref.train.stage import metrics_callback, read_log, write_summary


def _state(step, epoch, main=True):
    s = TrainerState()
    s.global_step, s.epoch, s.is_world_process_zero = step, epoch, main
    return s


def test_metrics_log_holds_losses_and_the_callers_evaluation_per_epoch(tmp_path):
    calls = []

    def evaluate(model, tokenizer):
        calls.append((model, tokenizer))
        return {"accuracy": 0.25 * len(calls)}

    path = tmp_path / "stage" / "metrics.jsonl"
    cb = metrics_callback(path, tokenizer="tok", evaluate=evaluate)
    ctl = TrainerControl()
    cb.on_log(None, _state(5, 0.5), ctl, logs={"loss": 1.5})
    cb.on_epoch_end(None, _state(10, 1.0), ctl, model="m")
    cb.on_log(None, _state(15, 1.5), ctl, logs={})  # nothing logged: no line
    cb.on_epoch_end(None, _state(20, 2.0), ctl, model="m")
    cb.on_epoch_end(None, _state(20, 2.0, main=False), ctl, model="m")  # other processes neither evaluate nor write
    rows = read_log(path)
    assert calls == [("m", "tok"), ("m", "tok")]
    assert [{k: v for k, v in r.items() if k != "time"} for r in rows] == [
        {"step": 5, "epoch": 0.5, "loss": 1.5},
        {"step": 10, "epoch": 1.0, "eval": {"accuracy": 0.25}},
        {"step": 20, "epoch": 2.0, "eval": {"accuracy": 0.5}},
    ]
    assert all(isinstance(r["time"], float) for r in rows)


def test_without_an_evaluation_only_losses_are_logged(tmp_path):
    path = tmp_path / "metrics.jsonl"
    cb = metrics_callback(path)
    cb.on_epoch_end(None, _state(4, 1.0), TrainerControl(), model="m")
    assert read_log(path) == []  # and a missing log reads as empty
    cb.on_log(None, _state(4, 1.0), TrainerControl(), logs={"loss": 0.5})
    assert [r["loss"] for r in read_log(path)] == [0.5]


class _Trainer:
    def __init__(self, main):
        self.main = main

    def is_world_process_zero(self):
        return self.main


def test_summary_is_written_by_the_main_process_only(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert write_summary(tmp_path / "a", {"steps": 3}, _Trainer(True)) == {"steps": 3}
    assert json.loads((tmp_path / "a" / "summary.json").read_text()) == {"steps": 3}
    write_summary(tmp_path / "b", {"steps": 3}, _Trainer(False))
    assert not (tmp_path / "b" / "summary.json").exists()
    write_summary(tmp_path / "b", {"steps": 0})  # no trainer (nothing trained): written
    assert json.loads((tmp_path / "b" / "summary.json").read_text()) == {"steps": 0}
