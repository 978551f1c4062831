"""Fitting a long history into the model's context."""

from __future__ import annotations

import json
from typing import Any

from agents.context import fit_history, shorten_tool_output
from tests.history import assert_strict


def exchange(n: int, size: int = 100) -> list[dict[str, Any]]:
    """A user turn, a tool call, its result and an answer."""
    call = {
        "id": f"c{n}",
        "type": "function",
        "function": {"name": "read_file", "arguments": json.dumps({"path": f"f{n}"})},
    }
    return [
        {"role": "user", "content": f"question {n} " + "u" * size},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "r" * size, "tool_call_id": f"c{n}", "name": "read_file"},
        {"role": "assistant", "content": f"answer {n}"},
    ]


def test_it_sends_a_short_history_as_it_is():
    history = exchange(1) + exchange(2)
    assert fit_history(history, budget=10_000, tool_output_limit=1_000) == history


def test_it_drops_the_oldest_exchanges_whole():
    history = [m for n in range(10) for m in exchange(n)]
    fitted = fit_history(history, budget=1_000, tool_output_limit=10_000)
    note, first, *rest = fitted
    assert note["role"] == "system" and "left out" in note["content"]
    assert first["role"] == "user"
    assert fitted[-1] == {"role": "assistant", "content": "answer 9"}
    assert sum(len(m.get("content") or "") for m in fitted[1:]) <= 1_000
    assert_strict([m for m in fitted if m["role"] != "system"])
    count = int(note["content"].split()[0])
    assert count == len(history) - len(fitted) + 1


def test_it_always_keeps_the_latest_exchange():
    history = exchange(1) + exchange(2, size=5_000)
    fitted = fit_history(history, budget=100, tool_output_limit=100_000)
    assert fitted[1:] == exchange(2, size=5_000)


def test_it_shortens_huge_tool_output_keeping_head_and_tail():
    message = {"role": "tool", "content": "HEAD" + "x" * 10_000 + "TAIL", "tool_call_id": "c"}
    short = shorten_tool_output(message, 1_000)
    assert short["content"].startswith("HEAD") and short["content"].endswith("TAIL")
    assert "characters of tool output left out" in short["content"]
    assert len(short["content"]) < 1_100
    assert message["content"].startswith("HEAD" + "x")  # the original is untouched
    user = {"role": "user", "content": "y" * 10_000}
    assert shorten_tool_output(user, 1_000) is user  # only tool output is cut
