"""`lref serve` with students: flag errors, and a real subprocess that serves, answers and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from lref.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_serve_flag_errors(tmp_path, capsys):
    assert main(["serve"]) == 2
    assert "nothing to serve" in capsys.readouterr().err
    assert main(["serve", "--ranker", str(tmp_path / "missing")]) == 2
    assert "no such model folder" in capsys.readouterr().err
    assert main(["serve", "--ranker", str(tmp_path), "--products", str(tmp_path / "p.jsonl")]) == 2
    assert "--products" in capsys.readouterr().err
    assert main(["serve", "--engine", "vllm", "--model", "m", "--ranker", str(tmp_path), "--dry-run"]) == 2
    assert "embedded" in capsys.readouterr().err


def test_lref_serve_subprocess_reranks_and_stops_on_sigterm(students, esci_slice):
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "lref.cli", "serve", "--ranker", f"belts={students['ranker']}", "--no-int8",
           "--recall", students["recall"], "--products", str(Path(esci_slice) / "products.jsonl"),
           "--port", str(port), "--api-key", "k"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300  # importing torch and the students is slow on a loaded machine
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "lref serve did not start"
                time.sleep(0.3)
        h = {"Authorization": "Bearer k"}
        assert [m["id"] for m in httpx.get(f"{url}/v1/models", headers=h).json()["data"]] == ["belts", "recall"]
        body = {"model": "belts", "query": "leather belt", "documents": ["brown leather belt", "usb cable"]}
        r = httpx.post(f"{url}/v1/rerank", json=body, headers=h)
        assert r.status_code == 200 and len(r.json()["results"]) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after its graceful shutdown
        assert "serving ['belts', 'recall']" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
