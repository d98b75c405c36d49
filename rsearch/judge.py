"""A judge model as rater: an OpenAI-compatible chat endpoint scores each (prompt, completion) by a rubric.

The spec is `judge:MODEL`, or `judge:MODEL?option=value&...` with options from `JudgeConfig` (e.g.
`judge:qwen2.5:7b?rubric=my_rubric.txt&concurrency=8`). MODEL is what the endpoint calls the model (it may hold
`:` and `/`, as Ollama's and the hub's names do). The endpoint comes from the environment, never from the spec, so
it is never written where specs are (outputs, cards, caches, logs): `$RSEARCH_JUDGE_URL` (default
http://127.0.0.1:8000/v1, where vLLM serves; llama.cpp's server, Ollama's /v1 and hosted APIs speak the same
POST {base}/chat/completions) and `$RSEARCH_JUDGE_API_KEY` (optional, sent as `Authorization: Bearer`).

Each rating is one request: the rubric filled with the conversation and the completion, at temperature 0; the
score is the reply's last `Rating: N` (or `N/10`, `**N**`, a bare number). A reply without one is asked again to
give just that line; a score outside [low, high] is an error. Requests run in a small thread pool, are retried with
backoff on 429, 5xx, timeouts and dropped connections (bounded in count and time), and every score is appended,
fsynced, to `$RSEARCH_HOME/judge_cache/` under the sha256 of (model, rubric, conversation, completion): a second
run, or one resuming a killed run, asks only what is not there. Standard library only.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import logging
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from rsearch.config import Config, check, setting
from rsearch.errors import RsearchError, one_line
from rsearch.io_utils import append_jsonl
from rsearch.paths import rsearch_home
from rsearch.prompts import messages_of

log = logging.getLogger("rsearch.judge")

PREFIX = "judge:"
URL_ENV, KEY_ENV = "RSEARCH_JUDGE_URL", "RSEARCH_JUDGE_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8000/v1"
PLACEHOLDER = re.compile(r"\{(prompt|completion)\}")

# UltraFeedback's overall-quality rating (a teacher's critique, then a 1-10 score), in our own words
RUBRIC = """\
You are a strict but fair teacher reviewing an AI assistant's answer to a user's instruction. Judge the answer as \
a whole, weighing together how helpful it is, whether what it states is true, whether it is honest about what it \
does not know, and how closely it follows the instruction. Do not hold it to requirements the instruction never \
made, and do not reward length or politeness for their own sake.

### Instruction
{prompt}

### Answer
{completion}

First write a short critique (two to four sentences) naming the answer's main strengths and weaknesses. Then, \
on the last line, rate the answer's overall quality with a whole number from 1 (wrong, useless or harmful) to 10 \
(excellent, nothing left to improve), written exactly like this:
Rating: N
"""


@dataclass(frozen=True)
class JudgeConfig(Config):
    """A judge rater's settings: `judge:MODEL?name=value&...` sets any of them but `model`."""

    model: str = setting("", help="the model's name at the endpoint")
    rubric: str = setting("", help="a rubric file with {prompt} and {completion} in it (default: the built-in "
                          "UltraFeedback-style overall rating, 1-10)")
    low: float = setting(1.0, help="the lowest score the rubric gives")
    high: float = setting(10.0, help="the highest score the rubric gives")
    concurrency: int = setting(4, runtime=True, help="requests in flight at once")
    max_tokens: int = setting(512, help="the reply's length limit (the critique and the rating)")
    temperature: float = setting(0.0)
    timeout_s: float = setting(120.0, runtime=True, help="seconds to wait for one reply")
    retries: int = setting(5, runtime=True, help="re-sends of a request after 429, 5xx, a timeout or a dropped "
                           "connection")
    backoff_s: float = setting(1.0, runtime=True, help="the first wait before a re-send (doubling after each)")
    max_wait_s: float = setting(120.0, runtime=True, help="most seconds one request spends waiting to re-send")
    parse_retries: int = setting(2, help="times a reply without a score is asked again for just the rating")

    def __post_init__(self) -> None:
        check(bool(self.model.strip()), "rater judge: name the model, judge:MODEL")
        check(self.low < self.high, f"rater judge: low ({self.low}) must be below high ({self.high})")
        check(self.concurrency >= 1, "rater judge: concurrency must be at least 1")
        check(self.max_tokens >= 1, "rater judge: max_tokens must be at least 1")
        check(self.temperature >= 0, "rater judge: temperature must be ≥ 0")
        check(self.timeout_s > 0 and self.backoff_s >= 0 and self.max_wait_s >= 0,
              "rater judge: timeout_s must be positive, backoff_s and max_wait_s ≥ 0")
        check(self.retries >= 0 and self.parse_retries >= 0, "rater judge: retries must be ≥ 0")


def is_judge_spec(spec: str) -> bool:
    return spec.startswith(PREFIX)


def parse_spec(spec: str) -> JudgeConfig:
    """The settings `judge:MODEL?name=value&...` names, the rubric file checked; one RsearchError line otherwise."""
    model, _, query = spec[len(PREFIX):].partition("?")
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=True) if query else []
    except ValueError:
        raise RsearchError(f"rater {spec}: options are name=value pairs joined by &") from None
    options = dict(pairs)
    check(len(options) == len(pairs), f"rater {spec}: an option is given twice")
    check("model" not in options, f"rater {spec}: the model comes before '?', not as an option")
    cfg = JudgeConfig.from_dict({**options, "model": model}, where="rater judge")
    rubric_text(cfg)
    return cfg


def rubric_text(cfg: JudgeConfig) -> str:
    if not cfg.rubric:
        return RUBRIC
    p = Path(cfg.rubric).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RsearchError(f"rater judge: cannot read the rubric {p} ({one_line(e)})") from None
    missing = [name for name in ("{prompt}", "{completion}") if name not in text]
    if missing:
        raise RsearchError(f"rater judge: the rubric {p} has no {missing[0]} to fill in")
    return text


def endpoint() -> tuple[str, str]:
    """(the chat-completions URL, the key or "") from the environment; a bad URL is one line that does not repeat
    it (it may hold credentials)."""
    import os

    base = (os.environ.get(URL_ENV) or DEFAULT_URL).strip().rstrip("/")
    parts = urllib.parse.urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RsearchError(f"{URL_ENV}: expected http(s)://HOST[:PORT]/PATH, the base of an OpenAI-compatible API "
                           "(e.g. http://127.0.0.1:8000/v1)")
    url = base if base.endswith("/chat/completions") else base + "/chat/completions"
    return url, os.environ.get(KEY_ENV, "").strip()


def host_of(url: str) -> str:
    """host:port of a URL, without any user:password in it."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def conversation_text(messages: Sequence[dict]) -> str:
    """The prompt as the rubric shows it: the user's text alone, or every turn headed by its role."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)


def fill(rubric: str, prompt: str, completion: str) -> str:
    """The rubric with {prompt} and {completion} replaced in one pass (so neither text is filled in again)."""
    return PLACEHOLDER.sub(lambda m: prompt if m.group(1) == "prompt" else completion, rubric)


NUMBER = r"(-?\d+(?:\.\d+)?)"
SCORE_PATTERNS = (  # most explicit first; within one, the last match (a critique may quote numbers before it)
    re.compile(r"(?:rating|score)\s*[:=]?\s*[*_`\[(]*\s*" + NUMBER, re.IGNORECASE),
    re.compile(NUMBER + r"\s*(?:/|out of)\s*\d+", re.IGNORECASE),
    re.compile(r"\*\*\s*" + NUMBER + r"\s*\*\*"),
    re.compile(r"^\s*[*_`]*" + NUMBER + r"[*_`.]*\s*$"),
)
THINKING = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


def parse_score(reply: str) -> float | None:
    """The score in a judge's reply ("Rating: 7", "7/10", "**8**", "8"), or None when there is none."""
    text = THINKING.sub("", reply or "")
    for pattern in SCORE_PATTERNS:
        found = pattern.findall(text)
        if found:
            return float(found[-1])
    return None


def cache_key(model: str, rubric: str, messages: Sequence[dict], completion: str) -> str:
    data = json.dumps([model, rubric, [[m["role"], m["content"]] for m in messages], completion], ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()


class JudgeCache:
    """Append-only JSONL of {key, score, reply}, one file per (model, rubric); a torn last line is skipped."""

    def __init__(self, path: Path):
        self.path, self.lock = path, threading.Lock()
        self.scores: dict[str, float] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            raw = path.read_bytes()
            for line in raw.decode("utf-8", errors="replace").splitlines():
                try:
                    row = json.loads(line)
                    self.scores[row["key"]] = float(row["score"])
                except (ValueError, KeyError, TypeError):
                    continue
            if raw and not raw.endswith(b"\n"):  # a killed writer's torn line: start the next one afresh
                with open(path, "ab") as f:
                    f.write(b"\n")

    def put(self, key: str, score: float, reply: str) -> None:
        with self.lock:
            append_jsonl(self.path, {"key": key, "score": score, "reply": reply[:4000]})
            self.scores[key] = score


TRANSIENT = (TimeoutError, socket.timeout, ConnectionResetError)  # a URLError's reason worth a re-send


class Refused(RsearchError):
    """The endpoint refused the key (HTTP 401/403)."""


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


class JudgeRater:
    """The `judge:` rater (see the module docstring)."""

    def __init__(self, spec: str):
        self.name, self.cfg = spec, parse_spec(spec)
        self.rubric = rubric_text(self.cfg)
        self.url, self.key = endpoint()
        self.host = host_of(self.url)
        digest = hashlib.sha256(json.dumps([self.cfg.model, self.rubric]).encode()).hexdigest()[:16]
        self.cache = JudgeCache(rsearch_home() / "judge_cache" / f"{digest}.jsonl")
        self.check_endpoint()

    def _scrub(self, text: str) -> str:
        return text.replace(self.key, "***") if self.key else text

    def _fail(self, message: str) -> RsearchError:
        return RsearchError(self._scrub(f"rater judge:{self.cfg.model}: {message}"))

    def request(self, messages: list[dict]) -> str:
        """The reply's text; retried with backoff on 429, 5xx, timeouts and dropped connections."""
        body = json.dumps({"model": self.cfg.model, "messages": messages, "temperature": self.cfg.temperature,
                           "max_tokens": self.cfg.max_tokens}).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        waited, reason = 0.0, ""
        for attempt in range(self.cfg.retries + 1):
            retry_after = None
            try:
                req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as response:
                    raw = response.read()
                return self._content(raw)
            except urllib.error.HTTPError as e:
                if e.code in (401, 403):
                    raise self._refused(e.code) from None
                if e.code != 429 and e.code < 500:
                    raise self._fail(f"the endpoint at {self.host} answered HTTP {e.code} "
                                     f"({self._error_text(e)})") from None
                reason, retry_after = f"HTTP {e.code}", e.headers.get("Retry-After") if e.headers else None
                e.close()
            except urllib.error.URLError as e:
                if not isinstance(e.reason, TRANSIENT):
                    raise self._unreachable(e) from None
                reason = one_line(str(e.reason)) or "timed out"
            except (TimeoutError, socket.timeout):
                reason = f"no reply in {self.cfg.timeout_s:g} s"
            except (ConnectionError, http.client.HTTPException) as e:
                reason = f"connection dropped ({one_line(e)})"
            if attempt == self.cfg.retries:
                break
            wanted = self.cfg.backoff_s * 2 ** attempt
            if retry_after and retry_after.strip().isdigit():
                wanted = max(wanted, float(retry_after))
            delay = min(wanted, max(0.0, self.cfg.max_wait_s - waited))
            if wanted > 0 and delay == 0:  # the wait budget is spent
                break
            log.debug(f"judge: {reason}; retrying in {delay:.1f} s")
            time.sleep(delay)
            waited += delay
        raise self._fail(f"the endpoint at {self.host} kept failing ({reason}) after {attempt + 1} tries and "
                         f"{waited:.0f} s of waiting")

    def _refused(self, code: int) -> RsearchError:
        hint = f"the key in ${KEY_ENV} was refused" if self.key else f"no key was sent (set ${KEY_ENV})"
        return Refused(self._scrub(f"rater judge:{self.cfg.model}: the endpoint at {self.host} answered HTTP {code}: "
                                   f"{hint}"))

    def _unreachable(self, e: urllib.error.URLError) -> RsearchError:
        return self._fail(f"cannot reach the endpoint at {self.host} ({one_line(str(e.reason))}); is the server "
                          f"running, and ${URL_ENV} its base URL?")

    def check_endpoint(self) -> None:
        """GET {base}/models once, so an unreachable host or a refused key fails at load, before any work is done;
        any other answer (an endpoint without that route, a busy one) is left to the rating requests."""
        url = self.url[:-len("/chat/completions")] + "/models"
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers, method="GET"),
                                        timeout=min(self.cfg.timeout_s, 30.0)):
                pass
        except urllib.error.HTTPError as e:
            e.close()
            if e.code in (401, 403):
                raise self._refused(e.code) from None
        except urllib.error.URLError as e:
            if not isinstance(e.reason, TRANSIENT):
                raise self._unreachable(e) from None
        except (TimeoutError, ConnectionError, http.client.HTTPException):
            pass

    def _error_text(self, e: urllib.error.HTTPError) -> str:
        """A short reason from an error reply's body ({error: {message}} as OpenAI sends it), else its status."""
        try:
            data = json.loads(e.read().decode("utf-8", errors="replace"))
            message = data["error"]["message"] if isinstance(data.get("error"), dict) else data.get("error")
            return one_line(str(message), 160)
        except Exception:
            return one_line(str(e.reason or "error"), 160)

    def _content(self, raw: bytes) -> str:
        try:
            data = json.loads(raw)
        except ValueError:
            snippet = raw[:60].decode("utf-8", errors="replace")
            raise self._fail(f"the endpoint at {self.host} sent a reply that is not JSON ({snippet!r}…); is "
                             f"${URL_ENV} an OpenAI-compatible API base (…/v1)?") from None
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise self._fail(f"the endpoint at {self.host} sent JSON without choices[0].message.content") from None
        if content is not None and not isinstance(content, str):
            raise self._fail(f"the endpoint at {self.host} sent a non-text message content")
        return content or ""

    def score(self, messages: list[dict], completion: str) -> tuple[float, str]:
        """(score, the reply that gave it) for one completion; a reply without a score is asked again, the chat
        growing by each reply and reminder (a deterministic endpoint would repeat itself on the same chat)."""
        chat = [{"role": "user", "content": fill(self.rubric, conversation_text(messages), completion)}]
        for _ in range(self.cfg.parse_retries + 1):
            reply = self.request(chat)
            value = parse_score(reply)
            if value is not None:
                break
            reminder = (f"Give your rating now, as one line: the word Rating, a colon, then a whole number from "
                        f"{_fmt(self.cfg.low)} to {_fmt(self.cfg.high)}.")
            chat = chat + [{"role": "assistant", "content": reply}, {"role": "user", "content": reminder}]
        else:
            raise self._fail(f"no score in the reply for prompt {conversation_text(messages)[:60]!r} after "
                             f"{self.cfg.parse_retries + 1} tries (it said {one_line(reply, 80)!r})")
        if not self.cfg.low <= value <= self.cfg.high:
            raise self._fail(f"scored {_fmt(value)}, outside {_fmt(self.cfg.low)}-{_fmt(self.cfg.high)}, for prompt "
                             f"{conversation_text(messages)[:60]!r}")
        return value, reply

    def rate(self, prompts: Sequence[Any], completions: Sequence[str]) -> list[float]:
        """One score per (prompt, completion): from the cache, else asked (each distinct pair once)."""
        asked = [(messages_of(p), c) for p, c in zip(prompts, completions, strict=True)]
        keys = [cache_key(self.cfg.model, self.rubric, m, c) for m, c in asked]
        todo = {k: pair for k, pair in zip(keys, asked) if k not in self.cache.scores}
        log.debug(f"judge {self.cfg.model}: {len(keys)} ratings, {len(keys) - sum(k in todo for k in keys)} from the "
                 f"cache, {len(todo)} to ask (endpoint from ${URL_ENV})")
        if todo:
            self._ask(todo)
        return [self.cache.scores[k] for k in keys]

    def _ask(self, todo: dict[str, tuple[list[dict], str]]) -> None:
        """Asks every pair in a thread pool, caching each score as it arrives; the first error stops the rest."""
        error: BaseException | None = None
        pool = ThreadPoolExecutor(max_workers=min(self.cfg.concurrency, len(todo)), thread_name_prefix="judge")
        try:
            futures = {pool.submit(self.score, *pair): key for key, pair in todo.items()}
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                try:
                    value, reply = future.result()
                except BaseException as e:  # the first failure is raised; pending requests are dropped
                    if error is None:
                        error = e
                        for f in futures:
                            f.cancel()
                    continue
                self.cache.put(futures[future], value, reply)
        finally:  # every future is done here unless interrupted: then in-flight requests are not waited for
            pool.shutdown(wait=False, cancel_futures=True)
        if error is not None:
            raise error
