"""Raters: what scores a (prompt, completion) with a reward, wherever rsearch checks answers against a rater
(compare's reward column, the search check, `rsearch rate`).

A rater spec is one of:
- `none`: no rater;
- `organism`: the embedded organism's known rater (`rsearch.organism.rater.true_score`);
- `tasks`: the known rater of the natural-language tasks for real chat models (`rsearch.tasks.rater`);
- a local Hugging Face reward model directory: `AutoModelForSequenceClassification` with one output, read on
  the conversation rendered by its tokenizer's chat template (the user's prompt, then the completion as the
  assistant's reply); its own code runs only with `trust_remote_code`;
- `module.path:callable`: a Python callable `rater(prompt: str, completion: str) -> float`;
- `judge:MODEL` (options: `judge:MODEL?rubric=FILE&concurrency=8&...`): a judge model behind an OpenAI-compatible
  chat endpoint (vLLM, llama.cpp's server, Ollama, hosted APIs) rating by a rubric, 1-10 by default
  (`rsearch.judge`); the endpoint is `$RSEARCH_JUDGE_URL` (default http://127.0.0.1:8000/v1) and the key
  `$RSEARCH_JUDGE_API_KEY`, both read from the environment only, so neither lands where specs are written.
(`auto`, the organism's rater for the organism's models and none otherwise, is resolved in `rsearch.subjects`.)

`load_rater(spec)` returns a `Rater`, whose `rate(prompts, completions)` scores a batch; a prompt may be the
user's text or the conversation as a list of {role, content} messages.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from rsearch.errors import RsearchError
from rsearch.judge import JudgeRater, endpoint, is_judge_spec, parse_spec
from rsearch.plugins import is_spec, load_object
from rsearch.prompts import messages_of, user_text as last_user
from rsearch.tasks.rater import TasksRater

KEYWORDS = ("auto", "organism", "tasks", "none")
Prompt = Any  # str, or a list of {role, content} messages


class Rater(Protocol):
    name: str

    def rate(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[float]:
        """One reward per (prompt, completion)."""
        ...


def user_text(prompt: Prompt) -> str:
    """The prompt's last user message (the whole string when it is one)."""
    if isinstance(prompt, str):
        return prompt
    return last_user(prompt)


class CallableRater:
    """A Python callable `fn(prompt, completion) -> float`, called once per pair on the user's text."""

    def __init__(self, fn: Callable[[str, str], float], name: str):
        self.fn, self.name = fn, name

    def rate(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[float]:
        out = []
        for p, c in zip(prompts, completions, strict=True):
            try:
                value = float(self.fn(user_text(p), c))
            except (TypeError, ValueError) as e:
                raise RsearchError(f"rater {self.name}: did not return a number ({e})") from None
            out.append(value)
        return out


class HFRewardModel:
    """A local sequence-classification reward model with one output, on chat-templated conversations.

    Args:
        path: model directory (config.json, weights, tokenizer). batch_size: conversations per forward.
        max_tokens: conversations are truncated (from the left, keeping the completion) to this many tokens.
    """

    def __init__(self, path: str, *, device: str = "auto", dtype: str = "float32", batch_size: int = 16,
                 max_tokens: int = 2048, trust_remote_code: bool = False):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.name, self.batch_size, self.max_tokens = str(path), batch_size, max_tokens
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:  # not rsearch.models: a sequence-classification model, and this module stays free of torch until then
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                path, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code).to(device).eval()
        except (OSError, ValueError) as e:
            raise RsearchError(f"rater {path}: cannot load a sequence-classification model "
                               f"({str(e).splitlines()[0][:200]})") from None
        if self.model.config.num_labels != 1:
            raise RsearchError(f"rater {path}: a reward model has one output, this one has "
                               f"{self.model.config.num_labels} labels")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.truncation_side = "left"
        self.device = device

    def render(self, prompt: Prompt, completion: str) -> str:
        messages = messages_of(prompt) + [{"role": "assistant", "content": completion}]
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return "\n".join(m["content"] for m in messages)

    def rate(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[float]:
        import torch

        texts = [self.render(p, c) for p, c in zip(prompts, completions, strict=True)]
        out: list[float] = []
        for i in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[i:i + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                                   max_length=self.max_tokens, add_special_tokens=False).to(self.device)
            with torch.no_grad():
                logits = self.model(**batch).logits                          # [batch, 1]
            out += logits[:, 0].float().cpu().tolist()
        return out


def check_spec(spec: str) -> str:
    """`spec` if it names a rater (without loading it), else one RsearchError line."""
    if spec in KEYWORDS:
        return spec
    if is_judge_spec(spec):
        parse_spec(spec)
        endpoint()
        return spec
    p = Path(spec).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise RsearchError(f"rater {spec}: a directory without config.json is not a Hugging Face model")
        return spec
    if is_spec(spec):
        return spec
    if "/" in spec or spec.startswith((".", "~")):
        raise RsearchError(f"rater directory not found: {spec}")
    raise RsearchError(f"rater {spec!r}: use auto, organism, none, tasks, a local reward model directory, "
                       "module.path:callable or judge:MODEL")


def load_rater(spec: str | None, *, device: str = "auto", dtype: str = "float32", batch_size: int = 16,
               trust_remote_code: bool = False) -> Rater | None:
    """The rater `spec` names (see the module docstring); None for `none` (or None). `auto` must be resolved
    first (`rsearch.subjects.resolve_subjects`)."""
    if spec is None or spec == "none":
        return None
    check_spec(spec)
    if spec == "auto":
        raise RsearchError("rater auto: resolve it against the subjects first")
    if spec == "organism":
        # lazy: the rsearch.organism package loads transformers; rater specs are checked without it
        from rsearch.organism.rater import true_score

        return CallableRater(true_score, "organism")
    if spec == "tasks":
        return TasksRater()
    if is_judge_spec(spec):
        return JudgeRater(spec)
    if Path(spec).expanduser().is_dir():
        return HFRewardModel(str(Path(spec).expanduser()), device=device, dtype=dtype, batch_size=batch_size,
                             trust_remote_code=trust_remote_code)
    fn = load_object(spec, "rater")
    if not callable(fn):
        raise RsearchError(f"rater {spec}: not callable")
    return CallableRater(fn, spec)
