"""Fitting a long history into the model's context."""

from __future__ import annotations

import json
import random
from typing import Any

from agents.context import fit_history, fit_request, shorten_tool_output
from tests.history import assert_strict


def chars(message: dict[str, Any]) -> int:
    """The tests' own counter: one token per character of content and tool calls."""
    size = len(message.get("content") or "")
    for call in message.get("tool_calls") or []:
        size += len(call["function"]["name"]) + len(call["function"]["arguments"])
    return size


def call(n: int) -> dict[str, Any]:
    arguments = json.dumps({"path": f"f{n}"})
    return {
        "id": f"c{n}",
        "type": "function",
        "function": {"name": "read_file", "arguments": arguments},
    }


def result(n: int, size: int) -> dict[str, Any]:
    return {"role": "tool", "content": "r" * size, "tool_call_id": f"c{n}", "name": "read_file"}


def exchange(n: int, size: int = 100) -> list[dict[str, Any]]:
    """A user turn, a tool call, its result and an answer."""
    return [
        {"role": "user", "content": f"question {n} " + "u" * size},
        {"role": "assistant", "content": "", "tool_calls": [call(n)]},
        result(n, size),
        {"role": "assistant", "content": f"answer {n}"},
    ]


def fit(history: list[dict[str, Any]], budget: int, limit: int = 100_000) -> list[dict[str, Any]]:
    return fit_history(history, budget=budget, tool_output_limit=limit, count=chars)


def test_it_sends_a_short_history_as_it_is():
    history = exchange(1) + exchange(2)
    assert fit(history, 10_000) == history


def test_it_drops_the_oldest_exchanges_whole():
    history = [m for n in range(10) for m in exchange(n)]
    fitted = fit(history, 1_000)
    note, first, *rest = fitted
    assert note["role"] == "system" and "left out" in note["content"]
    assert first["role"] == "user"
    assert fitted[-1] == {"role": "assistant", "content": "answer 9"}
    assert sum(chars(m) for m in fitted[1:]) <= 1_000
    assert_strict(fitted[1:])
    count = int(note["content"].split()[0])
    assert count == len(history) - len(fitted) + 1
    assert fitted[1:] == history[-len(fitted) + 1 :]  # what is kept is unchanged


def test_inside_a_long_exchange_it_drops_whole_tool_rounds_and_keeps_the_question():
    question = {"role": "user", "content": "read all the files"}
    rounds = [
        m
        for n in range(6)
        for m in ({"role": "assistant", "content": "", "tool_calls": [call(n)]}, result(n, 400))
    ]
    fitted = fit([*exchange(0), question, *rounds], 1_000)
    assert fitted[1] == question
    assert fitted[-2:] == rounds[-2:]  # the latest call and its result
    assert_strict(fitted[1:])
    assert sum(chars(m) for m in fitted[1:]) <= 1_000


def test_a_message_too_long_on_its_own_is_cut_in_the_middle():
    huge = {"role": "user", "content": "HEAD" + "x" * 20_000 + "TAIL"}
    (only,) = fit([huge], 2_000)
    assert only["content"].startswith("HEAD") and only["content"].endswith("TAIL")
    assert "left out to fit the model's context" in only["content"]
    assert chars(only) <= 2_000
    assert huge["content"].count("x") == 20_000  # the stored message is untouched


def quarter(message: dict[str, Any]) -> int:
    return chars(message) // 4  # about four characters per token


def test_random_histories_stay_paired_within_budget_and_end_as_they_did():
    rng = random.Random(10)
    for _ in range(200):
        history: list[dict[str, Any]] = []
        for n in range(rng.randint(1, 12)):
            history.append({"role": "user", "content": "u" * rng.randint(1, 3_600)})
            for k in range(rng.randint(0, 3)):
                ids = [f"c{n}-{k}-{j}" for j in range(rng.randint(1, 3))]
                calls = [{**call(0), "id": i} for i in ids]
                history.append({"role": "assistant", "content": "", "tool_calls": calls})
                history += [{**result(0, rng.randint(1, 3_600)), "tool_call_id": i} for i in ids]
            if rng.random() < 0.8:
                history.append({"role": "assistant", "content": "a" * rng.randint(1, 3_600)})
        budget = rng.randint(300, 3_000)
        fitted = fit_history(history, budget=budget, tool_output_limit=60_000, count=quarter)
        body = fitted[1:] if fitted[0]["role"] == "system" else fitted
        assert_strict(body)
        assert body[0]["role"] == "user"
        last_user = max(i for i, m in enumerate(history) if m["role"] == "user")
        assert body[-1]["role"] == history[-1]["role"]
        assert any(m["role"] == "user" for m in body) and last_user >= 0
        # Within budget, the markers of what was cut included.
        assert sum(quarter(m) for m in body) <= budget


def test_it_shortens_huge_tool_output_keeping_head_and_tail():
    message = {"role": "tool", "content": "HEAD" + "x" * 10_000 + "TAIL", "tool_call_id": "c"}
    short = shorten_tool_output(message, 1_000)
    assert short["content"].startswith("HEAD") and short["content"].endswith("TAIL")
    assert "characters of tool output left out" in short["content"]
    assert len(short["content"]) < 1_100
    assert message["content"].startswith("HEAD" + "x")  # the original is untouched
    user = {"role": "user", "content": "y" * 10_000}
    assert shorten_tool_output(user, 1_000) is user  # only tool output is cut


def test_the_request_keeps_its_system_prompt_and_says_what_was_left_out():
    history = [m for n in range(30) for m in exchange(n, size=400)]
    fitted = fit_request(
        prompt="You are a test agent.",
        history=history,
        tools=None,
        model="m",
        window=1_000,
        reserve=200,
        tool_output_chars=60_000,
    )
    system, first, *_ = fitted.messages
    assert system["role"] == "system" and system["content"].startswith("You are a test agent.")
    assert "left out" in system["content"] and fitted.omitted
    assert first["role"] == "user"
    assert [m["role"] for m in fitted.messages].count("system") == 1
    assert fitted.budget == 800 and fitted.tokens <= fitted.budget
    # And the caller's history is untouched.
    assert len(history) == 120 and history[0]["content"].startswith("question 0")
