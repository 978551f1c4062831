"""The offline token estimate and what it learns from providers."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from agents import tokens
from agents.llm import LLMContextOverflow
from agents.llm.wire import overflow_error, status_error
from tests import fakellm


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    tokens.forget()
    yield
    tokens.forget()


def test_it_counts_common_words_as_one_token_each():
    assert tokens.estimate_text("the cat sat on the mat") == 6
    assert tokens.estimate_text("") == 0


def test_it_splits_long_words_digits_and_punctuation():
    assert tokens.estimate_text("understand") == 2  # 10 letters: 1 + 9 // 6
    assert tokens.estimate_text("x" * 30) == 8  # past 12 letters, one per 3 more: 2 + 18 / 3
    assert tokens.estimate_text("1234567") == 3  # groups of three digits
    assert tokens.estimate_text('{"a":') == 1 + 1 + 1  # '{"', a, '":'
    assert tokens.estimate_text("日本語") == 3  # one per character beyond ASCII


def test_code_and_json_cost_more_per_character_than_prose():
    prose = "The runtime keeps sessions and streams answers to the editor. " * 20
    code = "def f(x: int) -> dict[str, int]:\n    return {'x': x * 2}\n" * 20
    data = json.dumps([{"type": "function", "function": {"name": "read_file"}}] * 20)
    per_char = {
        k: tokens.estimate_text(v) / len(v) for k, v in (("p", prose), ("c", code), ("j", data))
    }
    assert per_char["p"] < per_char["c"] and per_char["p"] < per_char["j"]
    assert 3.5 <= 1 / per_char["p"] <= 6  # English prose: 4-5 characters per token


def test_a_message_counts_its_tool_calls():
    call = {"function": {"name": "read_file", "arguments": '{"path": "app.py"}'}}
    bare = tokens.estimate_message({"role": "assistant", "content": ""})
    assert (
        tokens.estimate_message({"role": "assistant", "content": "", "tool_calls": [call]}) > bare
    )


def test_it_learns_a_models_ratio_from_reported_usage():
    assert tokens.factor("m") == 1.0
    assert tokens.observe("m", estimated=1000, reported=1500)
    assert tokens.factor("m") == 1.5
    assert tokens.observe("m", estimated=1000, reported=2500)
    assert tokens.factor("m") == 2.0  # moves halfway towards the newest ratio
    assert tokens.factor("other") == 1.0


def test_it_ignores_implausible_usage_and_never_trusts_much_less_than_its_estimate():
    assert not tokens.observe("m", estimated=2000, reported=10)  # a fixed or bogus figure
    assert not tokens.observe("m", estimated=0, reported=10)
    assert tokens.factor("m") == 1.0
    assert tokens.observe("m", estimated=1000, reported=500)
    assert tokens.factor("m") == 0.8  # the floor: the estimate errs high on purpose


def test_a_stated_window_smaller_than_the_setting_wins():
    assert tokens.window("m", 8192) == 8192
    tokens.learn_window("m", 4096)
    assert tokens.window("m", 8192) == 4096
    assert tokens.window("m", 2048) == 2048
    tokens.learn_window("m", 6000)  # never grows back from a later, larger figure
    assert tokens.window("m", 8192) == 4096


# --- "context too long" as servers say it ------------------------------------------------------

OPENAI = fakellm.openai_overflow()
VLLM = {
    "object": "error",
    "message": "This model's maximum context length is 2048 tokens. However, you requested "
    "2600 tokens (2100 in the messages, 500 in the completion). Please reduce the length of "
    "the messages or completion.",
    "type": "BadRequestError",
    "code": 400,
}
LLAMA_CPP = {
    "error": {
        "code": 400,
        "message": "the request exceeds the available context size, try increasing it",
        "type": "exceed_context_size_error",
        "n_prompt_tokens": 2300,
        "n_ctx": 2048,
    }
}


@pytest.mark.parametrize(
    ("body", "window", "prompt"),
    [
        (OPENAI, 8192, 9000),
        (VLLM, 2048, 2100),
        (LLAMA_CPP, 2048, 2300),
        ("prompt too long", None, None),
    ],
)
def test_it_recognises_a_context_overflow_and_its_figures(body, window, prompt):
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    error = status_error(400, raw, httpx.Headers(), where="127.0.0.1:9")
    assert isinstance(error, LLMContextOverflow)
    assert error.status == 400 and not error.retryable
    assert (error.window, error.prompt_tokens) == (window, prompt)
    assert "longer than the model's context" in error.message


def test_other_errors_are_not_overflows():
    unknown_tool = json.dumps({"error": {"message": "Invalid tool name 'x'"}}).encode()
    assert overflow_error(400, unknown_tool, "") is None
    assert overflow_error(500, b"prompt too long", "") is None  # a 5xx stays a server fault
    assert overflow_error(413, b"input too long", "") is not None
