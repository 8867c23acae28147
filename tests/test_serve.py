"""`weitiao serve`: real servers started on free loopback ports, called over HTTP.

The contract: POST /v1/predict {"inputs": [...]} -> {"predictions": [...]}, each what `weitiao
predict` prints for that input; with WEITIAO_API_KEY set every route but /health wants the
bearer key (401); an empty list is a 422. Also: concurrent callers each get their own answers
(and were batched together), /health answers while the model works, SIGTERM finishes the
request in flight, schemathesis finds no 5xx, the OpenAI client streams a chat completion.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

KEY = "test-key-3f9a"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`weitiao serve RUN` in a child process, on a free port, ready when /health answers."""

    def __init__(self, run: Path, log: Path, *args: str, key: str | None = KEY, tmpdir: Path | None = None):
        self.port, self.key = free_port(), key
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1"} | ({"TMPDIR": str(tmpdir)} if tmpdir else {})
        env.pop("WEITIAO_API_KEY", None)
        if key:
            env["WEITIAO_API_KEY"] = key
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "weitiao", "serve", str(run), "--port", str(self.port), *args],
                                     env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            assert self.proc.poll() is None, log.read_text()
            try:
                if self.call("GET", "/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"server did not start: {log.read_text()}")

    def call(self, method: str, path: str, body=None, key: str | None = "default", raw: bytes | None = None):
        """(status, parsed JSON body)."""
        key = self.key if key == "default" else key
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={"Content-Type": "application/json"})
        if key:
            req.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def classifier(tiny_runs, tmp_path_factory):
    server = Server(tiny_runs["classification"], tmp_path_factory.mktemp("serve") / "cls.log", "--max-inputs", "64", "--max-wait-ms", "20")
    yield server
    server.stop()


TEXTS = ["we saw a great film today", "it was awful", "then went home and it was lovely", "a dull day", "superb", "bad and then bad"]


def test_predictions_are_what_weitiao_predict_prints(classifier, tiny_runs, capsys):
    from weitiao.cli import main

    status, body = classifier.call("POST", "/v1/predict", {"inputs": TEXTS})
    assert status == 200 and len(body["predictions"]) == len(TEXTS)
    assert main(["predict", str(tiny_runs["classification"]), "--text", *TEXTS]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert body["predictions"] == printed
    assert {"label", "score", "probabilities"} <= set(printed[0])


def test_the_api_key_guards_every_route_but_health(classifier):
    assert classifier.call("GET", "/health", key=None) == (200, {"status": "ok"})
    for method, path, body in (("POST", "/v1/predict", {"inputs": ["x"]}), ("GET", "/v1/model", None), ("GET", "/openapi.json", None)):
        assert classifier.call(method, path, body, key=None)[0] == 401
        assert classifier.call(method, path, body, key=KEY + "x")[0] == 401
    status, info = classifier.call("GET", "/v1/model")
    assert status == 200 and info["task"] == "classification" and info["labels"] == ["neg", "pos"] and "accuracy" in info["metrics"]


@pytest.mark.parametrize("body, words", [({"inputs": []}, "at least 1"), ({"inputs": ["ok"] * 65}, "at most 64"), ({"inputs": ["  "]}, "empty"),
                                         ({"inputs": [3]}, "string"), ({"inputs": "x"}, "array"), ({"texts": ["x"]}, "inputs"),
                                         ({"inputs": ["x" * 20_001]}, "over the limit")])
def test_bad_requests_are_422_with_a_message(classifier, body, words):
    status, answer = classifier.call("POST", "/v1/predict", body)
    assert status == 422 and words in json.dumps(answer), answer


def test_broken_json_is_a_4xx_and_the_server_goes_on(classifier):
    assert classifier.call("POST", "/v1/predict", raw=b"{not json")[0] == 422
    assert classifier.call("POST", "/v1/predict", {"inputs": ["fine"]})[0] == 200


def test_concurrent_callers_each_get_their_own_answers_batched_together(classifier, tiny_runs):
    from weitiao.api import load

    texts = [f"{TEXTS[i % len(TEXTS)]} number {i}" for i in range(48)]
    expected = {r["text"]: r for r in load(str(tiny_runs["classification"])).predict(texts)}
    before = classifier.call("GET", "/v1/model")[1]["batches_scored"]
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda t: classifier.call("POST", "/v1/predict", {"inputs": [t]}), texts))
    for text, (status, body) in zip(texts, answers):
        assert status == 200
        row = body["predictions"][0]
        assert row["text"] == text and row["label"] == expected[text]["label"]
        assert row["score"] == pytest.approx(expected[text]["score"], abs=1e-4)
    batches = classifier.call("GET", "/v1/model")[1]["batches_scored"] - before
    assert batches < len(texts) / 2, f"{batches} batches for {len(texts)} concurrent requests"


def test_health_answers_while_the_model_works(classifier):
    """While a request's batch is being scored (/v1/model counts it, its answer has not come back), /health answers."""
    big = {"inputs": [" ".join(["lovely"] * 40 + [str(i)]) for i in range(64)]}
    results, during = [], 0
    for _ in range(10):  # a request at a time, until one was caught in the middle of its scoring
        before = classifier.call("GET", "/v1/model")[1]["batches_scored"]
        worker = threading.Thread(target=lambda: results.append(classifier.call("POST", "/v1/predict", big)))
        worker.start()
        while worker.is_alive():
            started = classifier.call("GET", "/v1/model")[1]["batches_scored"] > before
            assert classifier.call("GET", "/health", key=None) == (200, {"status": "ok"})
            during += started and worker.is_alive()  # answered after the batch began and before its answer arrived
        worker.join()
        if during:
            break
    assert results and all(s == 200 and len(b["predictions"]) == 64 for s, b in results)
    assert during, "/health never answered while a batch was being scored"


def test_schemathesis_finds_no_server_errors(classifier, tmp_path):
    st = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run([str(st), "run", f"{classifier.url}/openapi.json", "--checks", "not_a_server_error",
                             "-H", f"Authorization: Bearer {KEY}", "--max-examples", "30", "--seed", "1", "--workers", "1",
                             "--request-timeout", "60"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_an_image_run_takes_base64_and_a_bad_image_fails_alone(tiny_runs, tmp_path):
    from weitiao.api import load

    images = sorted((tiny_runs["image_classification"].parents[1] / "image_classification" / "dev").rglob("*.png"))[::7][:4]
    server = Server(tiny_runs["image_classification"], tmp_path / "img.log", key=None)
    try:
        encoded = [base64.b64encode(p.read_bytes()).decode() for p in images]
        status, body = server.call("POST", "/v1/predict", {"inputs": encoded})
        assert status == 200
        expected = load(str(tiny_runs["image_classification"])).predict([str(p) for p in images])
        assert [r["label"] for r in body["predictions"]] == [r["label"] for r in expected]
        assert [r["image"] for r in body["predictions"]] == [f"inputs[{i}]" for i in range(len(images))]
        assert server.call("POST", "/v1/predict", {"inputs": ["not base64!"]})[0] == 422
        assert server.call("POST", "/v1/predict", {"inputs": [base64.b64encode(b"not an image").decode()]})[0] == 422
        assert server.call("POST", "/v1/predict", {"inputs": encoded[:1]})[0] == 200
        # the same images as multipart form data: each row names its file
        boundary = "weitiao-test-boundary"
        parts = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{p.name}\"\r\n"
                         f"Content-Type: image/png\r\n\r\n".encode() + p.read_bytes() + b"\r\n" for p in images) + f"--{boundary}--\r\n".encode()
        req = urllib.request.Request(server.url + "/v1/predict/files", data=parts, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(req, timeout=60) as r:
            rows = json.loads(r.read())["predictions"]
        assert [r["label"] for r in rows] == [r["label"] for r in expected] and [r["image"] for r in rows] == [p.name for p in images]
    finally:
        assert server.stop() in (0, -signal.SIGTERM)


def test_sigterm_finishes_the_request_in_flight(tiny_runs, tmp_path):
    server = Server(tiny_runs["classification"], tmp_path / "term.log", "--max-inputs", "1024", key=None)
    big = {"inputs": [" ".join(["superb"] * 60 + [str(i)]) for i in range(1024)]}  # one batch, scored for about half a second
    result, answered = [], []
    worker = threading.Thread(target=lambda: (result.append(server.call("POST", "/v1/predict", big)), answered.append(time.monotonic())))
    worker.start()
    deadline = time.time() + 120
    while server.call("GET", "/v1/model")[1]["batches_scored"] == 0:  # the server is scoring the request: it is in flight
        assert time.time() < deadline and worker.is_alive(), result
        time.sleep(0.01)
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    worker.join(120)
    assert result and result[0][0] == 200 and len(result[0][1]["predictions"]) == 1024, result[:1]
    assert answered[0] > signalled, "the answer came after SIGTERM: the request was in flight when the signal came"
    assert server.proc.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once done


def test_a_taken_port_is_a_one_line_error(tiny_runs):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "weitiao", "serve", str(tiny_runs["classification"]), "--port", str(port)],
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("error: --port:") and "Traceback" not in out.stderr


def test_the_openai_client_streams_a_chat_completion(tiny_runs, tmp_path):
    from openai import OpenAI

    from weitiao.api import load

    server = Server(tiny_runs["causal_lm"], tmp_path / "lm.log")
    try:
        client = OpenAI(base_url=server.url + "/v1", api_key=KEY)
        messages = [{"role": "user", "content": "Is this positive or negative?\n\nwe saw a great film"}]
        whole = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0)
        text = whole.choices[0].message.content
        assert whole.object == "chat.completion" and whole.usage.completion_tokens > 0 and whole.usage.prompt_tokens > 5
        pieces = [c.choices[0].delta.content or "" for c in
                  client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0, stream=True)]
        assert len([p for p in pieces if p]) >= 2 and "".join(pieces).strip() == text
        expected = load(str(tiny_runs["causal_lm"])).predict([messages[0]["content"]], max_new_tokens=6, temperature=0)[0]
        assert text == expected["generation"]
        status, body = server.call("POST", "/v1/predict", {"inputs": [messages[0]["content"]]})  # the run's own generation settings
        assert status == 200 and body["predictions"] == load(str(tiny_runs["causal_lm"])).predict([messages[0]["content"]])
        bad = OpenAI(base_url=server.url + "/v1", api_key="wrong")
        with pytest.raises(Exception, match="401"):
            bad.chat.completions.create(model="tiny", messages=messages)
    finally:
        assert server.stop() in (0, -signal.SIGTERM)


def test_the_onnx_backend_serves_the_same_predictions(tiny_runs, tmp_path):
    from weitiao.api import load

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    server = Server(tiny_runs["classification"], tmp_path / "onnx.log", "--backend", "onnx", key=None, tmpdir=scratch)
    try:
        status, body = server.call("POST", "/v1/predict", {"inputs": TEXTS})
        status_model, info = server.call("GET", "/v1/model")
        assert status == 200 and info["backend"] == "onnx" and "accuracy" in info["metrics"]
        expected = load(str(tiny_runs["classification"])).predict(TEXTS)
        assert [r["label"] for r in body["predictions"]] == [r["label"] for r in expected]
        assert [r["score"] for r in body["predictions"]] == pytest.approx([r["score"] for r in expected], abs=1e-5)
    finally:
        assert server.stop() in (0, -signal.SIGTERM)
    assert not list(scratch.glob("weitiao-*")), list(scratch.iterdir())  # the ONNX export made at start (the whole model) is gone after SIGTERM


def test_a_body_over_the_limit_is_413_with_or_without_its_length(classifier):
    import http.client

    body = json.dumps({"inputs": ["x" * 1000] * 34_000}).encode()  # 34 MB, over the 32 MB limit
    conn = http.client.HTTPConnection("127.0.0.1", classifier.port, timeout=60)
    conn.putrequest("POST", "/v1/predict")  # the headers alone: the length is refused before any of the body is read
    for name, value in (("Content-Type", "application/json"), ("Authorization", f"Bearer {KEY}"), ("Content-Length", str(len(body)))):
        conn.putheader(name, value)
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()
    def chunked(data: bytes) -> tuple[int, int]:
        """(status, bytes sent) of `data` sent in chunks of 1 MiB: no Content-Length to check first."""
        sent = []
        conn = http.client.HTTPConnection("127.0.0.1", classifier.port, timeout=60)
        chunks = (sent.append(len(data[i:i + (1 << 20)])) or data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20))
        conn.request("POST", "/v1/predict", body=chunks, encode_chunked=True,
                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
        status = conn.getresponse().status
        conn.close()
        return status, sum(sent)

    status, sent = chunked(body)
    assert status == 413 and 32 * 2**20 < sent <= len(body), (status, sent)  # the body itself, once: just over the limit
    small = json.dumps({"inputs": ["fine"] * 3}).encode()
    assert chunked(small) == (200, len(small))  # a chunked body under the limit is read and answered
    assert classifier.call("POST", "/v1/predict", {"inputs": ["fine"]})[0] == 200


def test_a_foreign_host_is_refused_and_no_path_leaves_the_server(classifier):
    """DNS rebinding: a page whose own name now points at 127.0.0.1 sends its Host; the server answers only its own names."""
    req = urllib.request.Request(classifier.url + "/v1/model", headers={"Host": "attacker.example:8000", "Authorization": f"Bearer {KEY}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=30)
    assert refused.value.code == 403 and b"Host" in refused.value.read()
    status, info = classifier.call("GET", "/v1/model")
    assert status == 200 and "/" not in info["base_model"] and info["base_model"]


def test_five_million_tiny_strings_fail_at_once_and_alone(classifier):
    """A 25 MB body of tiny strings is refused from a count of its quotes, before any parsing (pydantic would
    say 'at most 64 items' only after building every string); the next request is answered."""
    body = b'{"inputs": [' + b",".join([b'"a"'] * 5_000_000) + b"]}"
    status, answer = classifier.call("POST", "/v1/predict", raw=body)
    assert status == 422 and "strings in the body, over the limit of 64 inputs" in answer["detail"], answer
    assert classifier.call("POST", "/v1/predict", {"inputs": ['a "quoted" word', "fine"]})[0] == 200


def test_a_decompression_bomb_is_refused_from_its_header(tiny_runs, tmp_path):
    """A PNG of 12,000 x 12,000 pixels compresses to a few KB; decoding it would cost ~820 MB. It is 422 from its header."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buf, "PNG")
    assert len(buf.getvalue()) < 100_000
    server = Server(tiny_runs["image_classification"], tmp_path / "bomb.log", key=None)
    try:
        status, answer = server.call("POST", "/v1/predict", {"inputs": [base64.b64encode(buf.getvalue()).decode()]})
        assert status == 422 and "megapixels" in json.dumps(answer), answer
        assert server.call("GET", "/health")[0] == 200
    finally:
        server.stop()


def test_health_reports_a_dead_batching_thread(tiny_runs):
    from fastapi.testclient import TestClient

    from weitiao.rundir.opening import open_run
    from weitiao.serve.app import create_app

    app = create_app(open_run(str(tiny_runs["classification"])))
    client = TestClient(app)
    assert client.get("/health").json() == {"status": "ok"}
    app.state.batcher.close()
    answer = client.get("/health")
    assert answer.status_code == 503 and "batching thread" in answer.json()["detail"]


def test_serve_options_out_of_range_and_an_open_bind_without_a_key(tiny_runs):
    run = str(tiny_runs["classification"])
    for value in ("inf", "nan", "-1", "10001"):
        proc = subprocess.run([sys.executable, "-m", "weitiao", "serve", run, "--max-wait-ms", value, "--port", str(free_port())],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stderr.startswith("error: --max-wait-ms") and "Traceback" not in proc.stderr, proc.stderr
    env = {k: v for k, v in os.environ.items() if k != "WEITIAO_API_KEY"}
    proc = subprocess.Popen([sys.executable, "-m", "weitiao", "serve", run, "--host", "0.0.0.0", "--port", str(free_port())],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()
    finally:
        proc.kill()
        proc.wait()
    assert first.startswith("warning: serving on every address") and "WEITIAO_API_KEY" in first
