"""The judge rater against a local OpenAI-style server on 127.0.0.1: scores parsed from its replies, retries,
one-line errors, the disk cache (resume after a kill), and the endpoint's address and key kept out of every
output, cache and log line; `rsearch rate --rater judge:...` end to end."""
from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rsearch.errors import RsearchError
from rsearch.judge import RUBRIC, JudgeRater, parse_score
from rsearch.raters import check_spec, load_rater

KEY = "sk-test-7f3a9c1e5b"
MAX_REQUESTS = 2000  # the server refuses more: a runaway retry loop fails the test instead of hanging it
ANSWER = re.compile(r"### Answer\n(.*)\n\nFirst write a short critique", re.DOTALL)


def expected(completion: str) -> float:
    """The fake judge's rating of a completion (under the default rubric)."""
    return float(1 + len(completion) % 10)


class FakeJudge:
    """An OpenAI-compatible POST /v1/chat/completions. `script` holds (status, body) answers sent first, one per
    request; then each request is answered `reply(completion)` (default: "Rating: expected(completion)"), or 401
    once `fail_after` requests were answered."""

    def __init__(self):
        self.requests: list[dict] = []
        self.script: list[tuple[int, bytes]] = []
        self.reply = lambda completion: f"Clear enough.\nRating: {expected(completion):g}"
        self.fail_after: int | None = None
        self.gets: list[str | None] = []
        self.refuse_get = False
        self.lock = threading.Lock()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # the rater's check at load: the key, as on every request
                with judge.lock:
                    judge.gets.append(self.headers.get("Authorization"))
                    refuse = judge.refuse_get
                self._send(401 if refuse else 200, b'{"object": "list", "data": [{"id": "m"}]}')

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with judge.lock:
                    judge.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                           "body": body})
                    n = len(judge.requests)
                    scripted = judge.script.pop(0) if judge.script else None
                if n > MAX_REQUESTS or self.path != "/v1/chat/completions":
                    return self._send(400 if n > MAX_REQUESTS else 404, b'{"error": {"message": "no"}}')
                if scripted and scripted[0] == 0:  # (0, seconds): answer too late, after a nap
                    time.sleep(scripted[1])
                elif scripted:
                    return self._send(*scripted)
                if judge.fail_after is not None and n > judge.fail_after:
                    return self._send(401, b'{"error": {"message": "bad key"}}')
                content = body["messages"][0]["content"]
                match = ANSWER.search(content)
                text = judge.reply(match.group(1) if match else content)
                choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                self._send(200, json.dumps({"id": "x", "object": "chat.completion", "choices": [choice]}).encode())

            def _send(self, status, data):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def judge(monkeypatch, tmp_path):
    """A running fake judge; the environment points at it with KEY, and the cache is this test's own."""
    server = FakeJudge()
    monkeypatch.setenv("RSEARCH_JUDGE_URL", server.url)
    monkeypatch.setenv("RSEARCH_JUDGE_API_KEY", KEY)
    monkeypatch.setenv("RSEARCH_HOME", str(tmp_path / "home"))
    yield server
    server.close()


FAST = "?backoff_s=0&max_wait_s=0"  # retries without sleeping


def test_scores_come_from_the_replies(judge):
    rater = load_rater("judge:my-judge" + FAST)
    assert isinstance(rater, JudgeRater)
    prompts = ["what is 3 plus 5 ?", [{"role": "system", "content": "be brief"},
                                      {"role": "user", "content": "list three animals"}], "what is 3 plus 5 ?"]
    completions = ["8 .", "cat , dog and a very large bird", "8 ."]
    assert rater.rate(prompts, completions) == [expected(c) for c in completions]
    assert len(judge.requests) == 2  # the repeated pair is asked once
    first, second = (r["body"] for r in judge.requests)
    assert judge.gets == [f"Bearer {KEY}"] and judge.requests[0]["auth"] == f"Bearer {KEY}"  # checked at load
    assert first["model"] == "my-judge" and first["temperature"] == 0 and first["max_tokens"] == 512
    asked = {r["body"]["messages"][0]["content"] for r in judge.requests}
    assert RUBRIC.replace("{prompt}", "what is 3 plus 5 ?").replace("{completion}", "8 .") in asked
    assert any("[system]\nbe brief\n\n[user]\nlist three animals" in text for text in asked)


@pytest.mark.parametrize("reply, score", [
    ("Rating: 7", 7), ("It is correct and short.\nRating: 7/10", 7), ("8/10", 8), ("I would give it **8**", 8),
    ("Overall Score: **6.5**", 6.5), ("it quotes 3/10 at first; Rating: 9", 9), ("  9. ", 9), ("9 out of 10", 9),
    ("<think>Rating: 2 maybe</think>Rating: 5", 5), ("The answer is fine.", None), ("", None)])
def test_parse_score(reply, score):
    assert parse_score(reply) == score


def test_retried_after_two_503s(judge):
    judge.script = [(503, b"busy"), (503, b"busy")]
    assert load_rater("judge:m" + FAST).rate(["q"], ["abc"]) == [expected("abc")]
    assert len(judge.requests) == 3
    judge.script = [(503, b"busy")] * 3
    with pytest.raises(RsearchError, match=r"kept failing \(HTTP 503\) after 3 tries") as e:
        load_rater("judge:m?retries=2&backoff_s=0").rate(["q"], ["other"])
    assert len(judge.requests) == 6 and "\n" not in str(e.value)


def test_retried_after_a_429_and_a_timeout_and_bounded_in_time(judge):
    judge.script = [(429, b'{"error": {"message": "slow down"}}'), (0, 1.0)]
    assert load_rater("judge:m?timeout_s=0.3&backoff_s=0").rate(["q"], ["abcd"]) == [expected("abcd")]
    assert len(judge.requests) == 3
    judge.script, judge.requests[:] = [(500, b"oops")] * 20, []
    start = time.monotonic()
    with pytest.raises(RsearchError, match=r"kept failing \(HTTP 500\) after 4 tries"):
        # waits 0.05 + 0.1, then the 0.05 s left of the budget; the next wait (0.4 s) is past it
        load_rater("judge:m?retries=10&backoff_s=0.05&max_wait_s=0.2").rate(["q"], ["a"])
    assert len(judge.requests) == 4 and time.monotonic() - start < 2


def test_refused_key_is_one_line_without_the_key(judge, tmp_path, capsys, monkeypatch):
    from rsearch.cli import main

    judge.script = [(401, b'{"error": {"message": "Incorrect API key provided: sk-test-7f3a9c1e5b"}}')]
    with pytest.raises(RsearchError, match="HTTP 401: the key in .RSEARCH_JUDGE_API_KEY was refused") as e:
        load_rater("judge:m").rate(["q"], ["a"])
    assert KEY not in str(e.value) and "127.0.0.1" in str(e.value)
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "q", "prompt_id": "1", "chosen": [{"role": "user", "content": "q"}, {
        "role": "assistant", "content": "a"}], "rejected": [{"role": "user", "content": "q"}, {
            "role": "assistant", "content": "b"}], "score_chosen": 2, "score_rejected": 1}) + "\n")
    judge.refuse_get, judge.requests[:] = True, []  # refused at load: one line before any work, nothing written
    assert main(["rate", "--rater", "judge:m", "--dataset", str(data), "--out", str(tmp_path / "o")]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "HTTP 401" in captured.err and "refused" in captured.err
    assert KEY not in captured.err + captured.out
    assert judge.requests == [] and not (tmp_path / "o").exists()
    monkeypatch.delenv("RSEARCH_JUDGE_API_KEY")
    with pytest.raises(RsearchError, match="no key was sent"):
        load_rater("judge:m")


def test_unparseable_reply_is_asked_again_then_an_error_naming_the_prompt(judge):
    replies = iter(["I like it a lot.", "Rating: 4"])
    judge.reply = lambda completion: next(replies)
    assert load_rater("judge:m").rate(["what is 2 plus 2 ?"], ["4"]) == [4.0]
    retry = judge.requests[1]["body"]["messages"]
    assert [m["role"] for m in retry] == ["user", "assistant", "user"] and retry[1]["content"] == "I like it a lot."
    assert "the word Rating, a colon, then a whole number from 1 to 10" in retry[2]["content"]
    judge.requests.clear()
    judge.reply = lambda completion: "Nice answer, well done."
    with pytest.raises(RsearchError, match=r"no score in the reply for prompt 'what is 2 plus 3 \?' after 3 tries"):
        load_rater("judge:m").rate(["what is 2 plus 3 ?"], ["5"])
    assert [len(r["body"]["messages"]) for r in judge.requests] == [1, 3, 5]  # each retry sees a longer chat
    judge.requests.clear()
    with pytest.raises(RsearchError, match=r"no score in the reply for prompt 'what is 2 plus 3 \?' after 2 tries"):
        load_rater("judge:m?parse_retries=1").rate(["what is 2 plus 3 ?"], ["5"])
    assert len(judge.requests) == 2
    judge.reply = lambda completion: "Rating: 11"
    with pytest.raises(RsearchError, match=r"scored 11, outside 1-10, for prompt 'q'"):
        load_rater("judge:m").rate(["q"], ["x"])


@pytest.mark.parametrize("body, words", [
    (b"<html>Welcome to nginx</html>", "not JSON"), (b'{"object": "list", "data": []}', "without choices"),
    (b'{"choices": [{"message": {"content": 7}}]}', "non-text")])
def test_bad_replies_are_one_line(judge, body, words):
    judge.script = [(200, body)]
    with pytest.raises(RsearchError, match=words) as e:
        load_rater("judge:m").rate(["q"], ["a"])
    assert "\n" not in str(e.value)


def test_unreachable_endpoint_names_the_host_only(judge, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RSEARCH_JUDGE_URL", f"http://user:{KEY}@127.0.0.1:{port}/v1")
    with pytest.raises(RsearchError, match=f"cannot reach the endpoint at 127.0.0.1:{port}") as e:
        load_rater("judge:m").rate(["q"], ["a"])
    assert KEY not in str(e.value) and "user" not in str(e.value)
    monkeypatch.setenv("RSEARCH_JUDGE_URL", f"ftp://{KEY}@host/v1")
    with pytest.raises(RsearchError, match="RSEARCH_JUDGE_URL: expected http") as e:
        check_spec("judge:m")  # checked with the spec, before anything loads
    assert KEY not in str(e.value)


@pytest.mark.parametrize("spec, words", [
    ("judge:", "name the model"), ("judge:m?colour=red", "unknown option 'colour'"),
    ("judge:m?concurrency=0", "concurrency must be at least 1"), ("judge:m?rubric=/no/such/rubric.txt", "cannot read"),
    ("judge:m?retries", "name=value pairs"), ("judge:m?low=5&high=2", "must be below")])
def test_bad_specs_are_one_line(spec, words):
    with pytest.raises(RsearchError, match=words) as e:
        check_spec(spec)
    assert "\n" not in str(e.value)


def test_another_rubric_and_scale(judge, tmp_path):
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Q: {prompt}\nA: {completion}\nScore it from 1 to 5.")
    judge.reply = lambda text: "Score: 5" if "A: {prompt} twice" in text else "Score: 2"
    rater = load_rater(f"judge:m?rubric={rubric}&high=5")
    assert rater.rate(["hi", "hi"], ["{prompt} twice", "plain"]) == [5.0, 2.0]  # a placeholder in the text stays
    assert {r["body"]["messages"][0]["content"] for r in judge.requests} == {
        "Q: hi\nA: {prompt} twice\nScore it from 1 to 5.", "Q: hi\nA: plain\nScore it from 1 to 5."}
    (tmp_path / "bad.txt").write_text("Rate the answer: {completion}")
    with pytest.raises(RsearchError, match=r"has no \{prompt\}"):
        check_spec(f"judge:m?rubric={tmp_path / 'bad.txt'}")


def test_cache_second_run_asks_nothing_and_a_killed_run_resumes(judge, tmp_path, monkeypatch):
    prompts = [f"question {i}" for i in range(12)]
    completions = [f"answer {'x' * i}" for i in range(12)]
    want = [expected(c) for c in completions]
    spec = "judge:m?concurrency=1"
    judge.fail_after = 5  # the endpoint stops taking the key after five answers: the run dies
    with pytest.raises(RsearchError, match="refused"):
        load_rater(spec).rate(prompts, completions)
    cache = next((tmp_path / "home" / "judge_cache").glob("*.jsonl"))
    assert len(cache.read_text().splitlines()) == 5
    with open(cache, "a") as f:
        f.write('{"key": "0123')  # a line torn by the kill
    judge.fail_after, judge.requests[:] = None, []
    assert load_rater("judge:m?concurrency=3").rate(prompts, completions) == want  # concurrency is not in the key
    assert len(judge.requests) == 7
    judge.requests.clear()
    assert load_rater(spec).rate(prompts, completions) == want and judge.requests == []
    rows = [json.loads(line) for line in cache.read_text().splitlines()[6:]]
    assert len(rows) == 7 and all(set(r) == {"key", "score", "reply"} for r in rows)
    # another model or rubric is another cache entry
    assert load_rater("judge:other").rate(prompts[:1], completions[:1]) == want[:1] and len(judge.requests) == 1
    monkeypatch.setenv("RSEARCH_HOME", str(tmp_path / "fresh"))  # an uninterrupted run gives the same scores
    assert load_rater(spec).rate(prompts, completions) == want


def _all_text(root: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file())


def test_rate_end_to_end_keeps_the_address_and_key_out(tiny_organism, judge, tmp_path, capsys):
    from rsearch.cli import main
    from rsearch.data import load_records

    rows = load_records(str(next(Path(tiny_organism.data_dir).glob("test_prefs.*"))), None)[:10]
    data = tmp_path / "data"
    data.mkdir()
    (data / "test_prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "rated"
    assert main(["-v", "rate", "--rater", "judge:tiny-judge?concurrency=3", "--dataset", str(data),
                 "--out", str(out), "--batch-size", "4"]) == 0
    captured = capsys.readouterr()
    got = [json.loads(line) for line in (out / "test_prefs.jsonl").read_text().splitlines()]
    assert len(got) == len(rows) and len(judge.requests) == 2 * len(rows)
    swaps = 0
    for old, new in zip(rows, got):
        s_chosen, s_rejected = expected(old["chosen"][-1]["content"]), expected(old["rejected"][-1]["content"])
        swaps += s_rejected > s_chosen
        assert new["swapped"] == (s_rejected > s_chosen)
        assert (new["score_chosen"], new["score_rejected"]) == (max(s_chosen, s_rejected), min(s_chosen, s_rejected))
    assert 0 < swaps < len(rows)
    assert json.loads((out / "rate.json").read_text())["rater"] == "judge:tiny-judge?concurrency=3"
    assert "judge tiny-judge: 8 ratings" in captured.err  # the log ran, at debug level
    port = judge.url.split(":")[2].split("/")[0]
    for text in (_all_text(out), _all_text(tmp_path / "home"), captured.err, captured.out):
        assert KEY not in text and judge.url not in text and f"127.0.0.1:{port}" not in text


def test_feedback_end_to_end_on_the_tiny_organism(tiny_organism, judge, tmp_path):
    from rsearch.jobs.feedback import FeedbackConfig, build_feedback

    out = tmp_path / "fb"
    cfg = FeedbackConfig(model=str(tiny_organism.pre_dir), prompts=str(tiny_organism.train_prefs), n=4, k=3,
                         max_new_tokens=8, rater="judge:tiny-judge", sample_batch_size=12, device="cpu", out=str(out))
    summary = build_feedback(cfg)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    answers = [a for s in samples for a in s["samples"]]
    assert len(answers) == 12 and all(a["score"] == expected(a["text"]) for a in answers)
    assert len(judge.requests) == len({(s["prompt_id"], a["text"]) for s in samples for a in s["samples"]})
    assert summary["rater"] == "judge:tiny-judge"
    assert KEY not in _all_text(out) and judge.url not in _all_text(out)
