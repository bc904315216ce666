"""LLMJudge against a scripted OpenAI-compatible fake server on 127.0.0.1 (no network)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hneuron_lens.judge import (
    PROMPTS,
    LLMJudge,
    LLMJudgeError,
    UnparseableVerdict,
    cache_key,
    parse_verdict,
    render_prompt,
)

SECRET = "sk-test-DO-NOT-LEAK-1234567890"


class FakeServer:
    """Replies from a script: each entry is (status, content) or ("sleep", seconds)."""

    def __init__(self) -> None:
        self.script: list[tuple] = []
        self.requests: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                step = owner.script.pop(0) if owner.script else (200, "CORRECT")
                if step[0] == "sleep":
                    time.sleep(step[1])
                    step = (200, "CORRECT")
                status, content = step
                if status == 200:
                    payload = {"choices": [{"message": {"role": "assistant", "content": content}}]}
                else:
                    payload = {"error": {"message": content}}
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    s = FakeServer()
    yield s
    s.close()


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HL_TEST_KEY", SECRET)
    return "HL_TEST_KEY"


def _judge(server: FakeServer, key_env: str, **kw) -> LLMJudge:
    kw.setdefault("backoff_s", 0.01)
    return LLMJudge(server.url, "fake-model", api_key_env=key_env, **kw)


# --- strict parser ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "label"),
    [
        ("CORRECT", "correct"),
        ("incorrect", "incorrect"),
        ("  Refusal.  ", "refusal"),
        ("\nCORRECT\n", "correct"),
    ],
)
def test_parse_verdict_accepts_exactly_one_token(reply: str, label: str) -> None:
    assert parse_verdict(reply) == label


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "The answer is CORRECT",
        "Correct, because Paris is the capital.",
        "INCORRECT or CORRECT",
        "**CORRECT**",
        "CORRECT..",
        "CORRECTLY",
        "not CORRECT",
    ],
)
def test_parse_verdict_rejects_anything_else(reply: str) -> None:
    with pytest.raises(UnparseableVerdict):
        parse_verdict(reply)


def test_prompt_rendering_and_cache_key() -> None:
    msgs = render_prompt("v1", "Capital of France?", "Paris", ["Paris", "City of Light"])
    assert msgs[0]["role"] == "system" and "Paris; City of Light" in msgs[1]["content"]
    assert PROMPTS["v1"]["no_aliases"] in render_prompt("v1", "q", "r", [])[1]["content"]
    with pytest.raises(KeyError):
        render_prompt("v999", "q", "r", ["a"])
    k = cache_key("v1", "m", "q", "r", ["a"])
    assert len(k) == 64 and k == cache_key("v1", "m", "q", "r", ["a"])
    assert (
        len(
            {
                k,
                cache_key("v2", "m", "q", "r", ["a"]),
                cache_key("v1", "m2", "q", "r", ["a"]),
                cache_key("v1", "m", "q", "r2", ["a"]),
                cache_key("v1", "m", "q", "r", ["b"]),
            }
        )
        == 5
    )


# --- HTTP behaviour ----------------------------------------------------------------------------


def test_judge_sends_request_and_parses_verdict(server: FakeServer, secret_env: str) -> None:
    server.script = [(200, "Correct.")]
    j = _judge(server, secret_env).judge("Capital of France?", "It's Paris", ["Paris"])
    assert (j.label, j.judge, j.reply) == ("correct", "llm:fake-model:v1", "Correct.")
    assert (j.matched_alias, j.match_kind) == ("Paris", "contains")
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert req["body"]["model"] == "fake-model" and req["body"]["temperature"] == 0.0


def test_retry_after_500_then_success(server: FakeServer, secret_env: str, caplog) -> None:
    server.script = [(500, "boom"), (503, "busy"), (200, "INCORRECT")]
    judge = _judge(server, secret_env)
    with caplog.at_level(logging.DEBUG, logger="hneuron_lens"):
        j = judge.judge("q?", "Lyon", ["Paris"])
    assert j.label == "incorrect"
    assert len(server.requests) == 3 and judge.n_requests == 3
    assert "HTTP 500" in caplog.text and SECRET not in caplog.text


def test_retry_after_timeout(server: FakeServer, secret_env: str) -> None:
    server.script = [("sleep", 1.0), (200, "REFUSAL")]
    j = _judge(server, secret_env, timeout=0.2).judge("q?", "no idea", ["Paris"])
    assert j.label == "refusal" and len(server.requests) == 2


def test_gives_up_after_max_retries(server: FakeServer, secret_env: str) -> None:
    server.script = [(500, "x")] * 5
    judge = _judge(server, secret_env, max_retries=2)
    with pytest.raises(LLMJudgeError, match="after 3 attempts") as err:
        judge.judge("q?", "r", ["a"])
    assert len(server.requests) == 3 and SECRET not in str(err.value)


def test_client_errors_are_not_retried(server: FakeServer, secret_env: str) -> None:
    server.script = [(401, "bad key")]
    with pytest.raises(LLMJudgeError, match="HL_TEST_KEY") as err:
        _judge(server, secret_env).judge("q?", "r", ["a"])
    assert len(server.requests) == 1 and SECRET not in str(err.value)


def test_unparseable_reply_is_recorded(server: FakeServer, secret_env: str, tmp_path) -> None:
    server.script = [(200, "It is correct, I think.")]
    cache = tmp_path / "judge.jsonl"
    j = _judge(server, secret_env, cache_path=cache).judge("q?", "Paris", ["Paris"])
    assert (j.label, j.reply) == ("unparseable", "It is correct, I think.")
    record = json.loads(cache.read_text())
    assert record["label"] == "unparseable" and record["reply"] == "It is correct, I think."


def test_cache_hit_skips_the_server_and_survives_restart(
    server: FakeServer, secret_env: str, tmp_path, caplog
) -> None:
    cache = tmp_path / "cache" / "judge.jsonl"
    server.script = [(200, "CORRECT"), (200, "INCORRECT")]
    with caplog.at_level(logging.DEBUG, logger="hneuron_lens"):
        first = _judge(server, secret_env, cache_path=cache)
        a = first.judge("Capital of France?", "Paris", ["Paris"])
        b = first.judge("Capital of France?", "Paris", ["Paris"])  # in-memory hit
        second = _judge(server, secret_env, cache_path=cache)  # a new process resuming
        c = second.judge("Capital of France?", "Paris", ["Paris"])
        d = second.judge("Capital of Italy?", "Milan", ["Rome"])
    assert a == b == c and a.label == "correct" and d.label == "incorrect"
    assert len(server.requests) == 2 and second.n_requests == 1
    lines = cache.read_text().splitlines()
    assert len(lines) == 2
    rec = json.loads(lines[0])
    assert rec["prompt_version"] == "v1" and rec["prompt_template"] == PROMPTS["v1"]
    assert rec["model"] == "fake-model"
    # the key never reaches disk or the logs
    assert SECRET not in cache.read_text() and SECRET not in caplog.text
    assert SECRET not in json.dumps(second.to_dict())


def test_cache_tolerates_a_truncated_last_line(
    server: FakeServer, secret_env: str, tmp_path
) -> None:
    cache = tmp_path / "judge.jsonl"
    judge = _judge(server, secret_env, cache_path=cache)
    judge.judge("q1?", "a", ["a"])
    with cache.open("a") as fh:
        fh.write('{"key": "abc", "lab')  # a crash in the middle of a write
    resumed = _judge(server, secret_env, cache_path=cache)
    resumed.judge("q1?", "a", ["a"])
    assert resumed.n_requests == 0
    resumed.judge("q2?", "b", ["b"])
    rows = cache.read_text().splitlines()
    assert json.loads(rows[-1])["question"] == "q2?"  # appended on a fresh line


def test_no_key_sends_no_authorization(server: FakeServer, monkeypatch) -> None:
    monkeypatch.delenv("HL_UNSET_KEY", raising=False)
    _judge(server, "HL_UNSET_KEY").judge("q?", "a", ["a"])
    assert "Authorization" not in server.requests[0]["headers"]


def test_key_is_read_at_call_time(server: FakeServer, monkeypatch) -> None:
    monkeypatch.delenv("HL_LATE_KEY", raising=False)
    judge = _judge(server, "HL_LATE_KEY")
    monkeypatch.setenv("HL_LATE_KEY", SECRET)
    judge.judge("q?", "a", ["a"])
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert SECRET not in repr(vars(judge))


def test_constructor_validation() -> None:
    with pytest.raises(KeyError):
        LLMJudge("http://127.0.0.1:1/v1", "m", prompt_version="nope")
    with pytest.raises(ValueError):
        LLMJudge("http://127.0.0.1:1/v1", "m", max_retries=-1)


# --- redirects, plain http, secrets (hneuron_lens.llm.ChatClient) ------------------------------


class RedirectServer:
    """Answers POSTs to ``/v1/...`` with ``status`` and ``Location: target``, POSTs elsewhere with
    a CORRECT verdict; records what it received."""

    def __init__(self, status: int, target: str) -> None:
        self.requests: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner.requests.append({"path": self.path, "headers": dict(self.headers)})
                if self.path.startswith("/v1/"):
                    self.send_response(status)
                    self.send_header("Location", target)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = json.dumps({"choices": [{"message": {"content": "CORRECT"}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _port(url: str) -> str:
    return url.rsplit(":", 1)[1].split("/")[0]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_to_another_host_never_gets_the_key(
    server: FakeServer, secret_env: str, status: int, caplog
) -> None:
    """127.0.0.1 answers a redirect to ``localhost:<other port>``: another host name."""
    other = f"http://localhost:{_port(server.url)}/v1/chat/completions"
    redirector = RedirectServer(status, other)
    try:
        judge = LLMJudge(redirector.url, "fake-model", api_key_env=secret_env, max_retries=2)
        with (
            caplog.at_level(logging.DEBUG),
            pytest.raises(LLMJudgeError, match="redirected") as err,
        ):
            judge.judge("q?", "a", ["a"])
    finally:
        redirector.close()
    assert server.requests == []  # the second host received nothing, so never the key
    assert len(redirector.requests) == 1  # a redirect is not retried
    assert redirector.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert "localhost" in str(err.value) and SECRET not in str(err.value)
    assert SECRET not in caplog.text
    # control: the redirect target is live, so a client that followed it would have been seen
    import httpx

    assert httpx.post(other, json={"model": "m", "messages": []}).status_code == 200
    assert len(server.requests) == 1 and "Authorization" not in server.requests[0]["headers"]


@pytest.mark.parametrize(("target", "n"), [("/v2/chat/completions", 2), ("/v1/loop", 5)])
def test_same_origin_307_is_followed_with_the_key(secret_env: str, target: str, n: int) -> None:
    redirector = RedirectServer(307, target)  # a relative Location: the same origin
    try:
        judge = LLMJudge(redirector.url, "fake-model", api_key_env=secret_env, max_retries=0)
        if n == 2:
            assert judge.judge("q?", "a", ["a"]).label == "correct"
        else:
            with pytest.raises(LLMJudgeError, match="too many redirects"):
                judge.judge("q?", "a", ["a"])  # a redirect loop is bounded
    finally:
        redirector.close()
    assert len(redirector.requests) == n and redirector.requests[1]["path"] == target
    assert all(r["headers"]["Authorization"] == f"Bearer {SECRET}" for r in redirector.requests)


def test_plain_http_warning_and_credentials_in_url(caplog, monkeypatch) -> None:
    from hneuron_lens.errors import UsageError
    from hneuron_lens.llm import ChatClient, is_loopback

    assert all(is_loopback(h) for h in ("localhost", "127.0.0.1", "127.8.0.1", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("example.com", "10.0.0.1", "192.168.1.2"))
    monkeypatch.setenv("HL_TEST_KEY", SECRET)
    with caplog.at_level(logging.WARNING, logger="hneuron_lens"):
        ChatClient("http://127.0.0.1:9/v1", "m", api_key_env="HL_TEST_KEY")
        ChatClient("https://llm.example.com/v1", "m", api_key_env="HL_TEST_KEY")
        assert "plain http" not in caplog.text
        ChatClient("http://llm.example.com/v1", "m", api_key_env="HL_TEST_KEY")
    assert "plain http to a non-loopback host" in caplog.text and SECRET not in caplog.text
    with pytest.raises(UsageError, match="credentials") as err:
        ChatClient(f"https://user:{SECRET}@llm.example.com/v1", "m")
    assert SECRET not in str(err.value)
    with pytest.raises(UsageError, match="not an http"):
        ChatClient("ftp://llm.example.com", "m")


def test_retry_after_header_is_honoured_within_the_cap() -> None:
    from hneuron_lens.llm import ChatClient

    client = ChatClient("http://127.0.0.1:9/v1", "m", backoff_s=0.5, max_backoff_s=4.0)
    assert client._delay(1, None) == 0.5 and client._delay(3, None) == 2.0
    assert client._delay(1, "3") == 3.0 and client._delay(1, "120") == 4.0
    assert client._delay(1, "Wed, 21 Oct 2015 07:28:00 GMT") == 0.5
