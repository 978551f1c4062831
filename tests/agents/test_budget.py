"""Real models: tool choice, the context budget in tokens, overflow recovery, estimated usage.

Against the real local HTTP server playing the LLM (tests/fakellm.py), which can play a model
with a small window (refusing longer requests as llama.cpp does) or a server that ignores tools
unless ``tool_choice`` is sent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.checks import run_checks

from agents.llm import get_breaker
from agents.registry import get_agent
from sessions.models import LLMRequest
from tests import fakellm
from tests.agents.test_engine import history, new_session, result, user
from tests.history import assert_strict, text_of

pytestmark = pytest.mark.django_db(transaction=True)

READ = ("c1", "read_file", '{"path": "app.py"}')


@sync_to_async
def llm_rows(session_id: str = "s1") -> list[LLMRequest]:
    return list(LLMRequest.objects.filter(session_id=session_id).order_by("id"))


# --- Tool choice --------------------------------------------------------------------------------


async def test_a_server_that_needs_tool_choice_calls_tools_by_default(stream, llm):
    llm.needs_tool_choice = True
    await new_session(agent="coder")
    llm.enqueue(fakellm.tool_calls([READ]))
    chunks = await stream.send("s1", user("what is in app.py?"))
    assert chunks[-1]["type"] == "tool_call" and chunks[-1]["tool_name"] == "read_file"
    assert llm.requests[0]["tool_choice"] == "auto"


async def test_without_tool_choice_that_server_ignores_the_tools(stream, llm, settings):
    settings.LLM_TOOL_CHOICE = "omit"
    llm.needs_tool_choice = True
    await new_session(agent="coder")
    llm.enqueue(fakellm.tool_calls([READ]))
    chunks = await stream.send("s1", user("what is in app.py?"))
    assert text_of(chunks) == fakellm.IGNORED_TOOLS_REPLY  # what issue 10 saw
    assert "tool_choice" not in llm.requests[0] and llm.requests[0]["tools"]


async def test_required_forces_a_tool_only_where_the_user_spoke(stream, llm, settings):
    settings.LLM_TOOL_CHOICE = "required"
    await new_session(agent="coder")
    llm.enqueue(fakellm.tool_calls([READ]), fakellm.text("It prints hi."))
    await stream.send("s1", user("what is in app.py?"))
    chunks = await stream.send("s1", result("c1", "print('hi')"))
    assert text_of(chunks) == "It prints hi."
    assert [r["tool_choice"] for r in llm.requests] == ["required", "auto"]


async def test_tool_choice_none_is_sent_as_it_is(stream, llm, settings):
    settings.LLM_TOOL_CHOICE = "none"
    await new_session(agent="coder")
    await stream.send("s1", user("hi"))
    assert llm.requests[0]["tool_choice"] == "none"


@pytest.mark.parametrize(("value", "refused"), [("auto", False), ("omit", False), ("always", True)])
def test_it_refuses_an_unknown_tool_choice(settings, value, refused):
    settings.LLM_TOOL_CHOICE = value
    assert ("agent_runtime.E015" in {e.id for e in run_checks()}) is refused


@pytest.mark.parametrize(
    ("window", "reserve", "refused"), [(2048, 0, False), (2048, 2048, True), (0, 0, True)]
)
def test_it_refuses_a_window_without_room_for_the_answer(settings, window, reserve, refused):
    settings.LLM_CONTEXT_TOKENS = window
    settings.LLM_ANSWER_RESERVE_TOKENS = reserve
    assert ("agent_runtime.E016" in {e.id for e in run_checks()}) is refused


# --- Overflow recovery --------------------------------------------------------------------------

OPENAI_OVERFLOW = fakellm.openai_overflow()


async def long_session(stream: Any, llm: Any, turns: int = 4) -> None:
    await new_session(agent="coder")
    for n in range(turns):
        llm.enqueue(fakellm.text(f"answer {n} " + "word " * 300))
        await stream.send("s1", user(f"question {n} " + "more " * 300))
    llm.reset()


@pytest.mark.parametrize(
    "refusal",
    [
        fakellm.status(400, OPENAI_OVERFLOW),
        fakellm.status(400, "Bad Request: prompt too long"),  # text/plain, no figures
    ],
    ids=["context_length_exceeded", "plain-too-long"],
)
async def test_an_overflow_is_retried_with_less_history_in_the_same_turn(stream, llm, refusal):
    await long_session(stream, llm)
    llm.enqueue(refusal, fakellm.text("Still here."))
    chunks = await stream.send("s1", user("and now?"))
    assert [c["type"] for c in chunks] == ["assistant_message"] * len(chunks)
    assert text_of(chunks) == "Still here."
    first, second = llm.requests
    assert fakellm.prompt_tokens(second) < fakellm.prompt_tokens(first)
    assert second["messages"][-1] == {"role": "user", "content": "and now?"}
    assert "left out" in second["messages"][0]["content"]
    assert_strict(second["messages"][1:])
    rows = await llm_rows()
    assert [(r.success, "context" in r.error) for r in rows[-2:]] == [(False, True), (True, False)]
    assert len(await history()) == 10  # the stored history is whole: 4 exchanges and this one
    assert get_breaker().fail_counter == 0 and get_breaker().current_state == "closed"


async def test_the_window_an_error_states_is_used_from_then_on(stream, llm, settings):
    settings.LLM_CONTEXT_TOKENS = 100_000
    await long_session(stream, llm)
    stated = fakellm.openai_overflow(window=3000)
    llm.enqueue(fakellm.status(400, stated), fakellm.text("One."), fakellm.text("Two."))
    await stream.send("s1", user("and now?"))
    await stream.send("s1", user("and then?"))
    assert fakellm.prompt_tokens(llm.requests[-1]) <= 3000  # no second refusal needed
    assert len(llm.requests) == 3


async def test_a_turn_that_overflows_twice_fails_but_the_session_goes_on(stream, llm):
    await long_session(stream, llm, turns=2)
    too_long = fakellm.status(400, OPENAI_OVERFLOW)
    llm.enqueue(too_long, too_long, fakellm.text("Back again."))
    chunks = await stream.send("s1", user("and now?"))
    assert [c["type"] for c in chunks] == ["error"]
    assert "longer than the model's context" in chunks[0]["error"]
    assert len(llm.requests) == 2  # retried once, not more
    chunks = await stream.send("s1", user("hello?"))
    assert text_of(chunks) == "Back again."
    assert get_breaker().current_state == "closed"


async def test_overflow_400s_never_open_the_breaker(stream, llm, settings):
    settings.LLM_BREAKER_FAIL_MAX = 2
    await new_session(agent="coder")
    for _ in range(3):
        llm.enqueue(fakellm.status(400, OPENAI_OVERFLOW), fakellm.status(400, OPENAI_OVERFLOW))
        await stream.send("s1", user("hi"))
    llm.enqueue(fakellm.text("Fine."))
    assert text_of(await stream.send("s1", user("hi"))) == "Fine."
    assert get_breaker().current_state == "closed"


# --- A small model through a long session -------------------------------------------------------

PROSE = (
    "The runtime keeps the session's history whole and sends the model only what fits. "
    "Older exchanges leave the request first, then older tool rounds of the latest one. "
)
CODE = "def handler(request):\n    data = json.loads(request.body)\n    return data['id']\n"


def long_answer(n: int) -> str:
    return f"Answer {n}. " + PROSE * 8 + "```python\n" + CODE * 6 + "```\n"


# The coder's prompt and nine tools take ~2,400 tokens: 2048 would leave no room at all.
@pytest.mark.parametrize("window", [4096, 8192])
async def test_a_small_model_survives_twenty_long_turns(stream, llm, settings, window):
    settings.LLM_CONTEXT_TOKENS = window
    llm.context_tokens = window  # the fake refuses anything longer, as llama.cpp does
    # It reports its own count as usage, so the runtime can calibrate.
    answered: list[int] = []

    def respond(payload: dict[str, Any]) -> fakellm.Script:
        answered.append(fakellm.prompt_tokens(payload))
        reply = long_answer(len(answered))
        return fakellm.text(reply, usage=(answered[-1], len(reply) // 4))

    llm.responder = respond
    await new_session(agent="coder")
    figures: list[tuple[int, int, int]] = []
    for n in range(20):
        before = (len(llm.requests), len(llm.refused))
        question = f"Question {n}: " + PROSE * 4
        if n % 4 == 3:  # now and then a tool round with a long file
            llm.enqueue(fakellm.tool_calls([(f"r{n}", "read_file", '{"path": "big.py"}')]))
            chunks = await stream.send("s1", user(question))
            assert chunks[-1]["type"] == "tool_call"
            chunks = await stream.send("s1", result(f"r{n}", {"content": CODE * 80}))
        else:
            chunks = await stream.send("s1", user(question))
        assert not [c for c in chunks if c["type"] == "error"], chunks
        assert text_of(chunks).startswith("Answer")
        for request in llm.requests[before[0] :]:
            messages = request["messages"]
            assert messages[0]["role"] == "system"
            assert messages[0]["content"].startswith(get_agent("coder").prompt)
            assert messages[1]["role"] == "user"
            assert_strict(messages[1:])
            assert question in [m["content"] for m in messages if m["role"] == "user"]
            figures.append((n + 1, fakellm.prompt_tokens(request), len(messages)))
        refused = len(llm.refused) - before[1]
        assert refused <= 1 if n == 0 else refused == 0  # only before it has calibrated
    reserve = window // 4
    for turn, used, _ in figures:
        assert used <= window
        if turn > 1:
            assert used <= window - reserve, figures
    stored = await history()
    assert len(stored) == 20 * 2 + 5 * 2  # every message, each tool round's two included
    assert [m["content"] for m in stored if m["role"] == "user"] == [
        f"Question {n}: " + PROSE * 4 for n in range(20)
    ]
    print(
        "\nturn, request tokens (the fake's count), messages sent; window",
        window,
        "budget",
        window - reserve,
    )
    for row in figures:
        print(*row)


# --- Estimated usage ----------------------------------------------------------------------------


async def test_usage_the_provider_did_not_report_is_estimated_and_flagged(stream, llm, api):
    await new_session(agent="coder")
    llm.enqueue(fakellm.text("No usage from me. " * 20, usage=None), fakellm.text("Counted."))
    await stream.send("s1", user("first"))
    await stream.send("s1", user("second"))
    estimated, reported = await llm_rows()
    assert estimated.usage_estimated and not reported.usage_estimated
    assert estimated.prompt_tokens > 2000  # the coder's prompt and tools are in it
    assert 60 <= estimated.completion_tokens <= 120  # 80 short words
    assert (reported.prompt_tokens, reported.completion_tokens) == (10, 1)
    stored = await sync_to_async(api.get)("/sessions/s1/history")
    assert stored.status_code == 200, stored.content
    usages = [m["usage"] for m in stored.json()["messages"] if m["role"] == "assistant"]
    assert [u["estimated"] for u in usages] == [True, False]
    metrics = await sync_to_async(api.get)("/events/metrics/session/s1")
    assert [r["usage_estimated"] for r in metrics.json()["requests"]] == [True, False]


@pytest.mark.parametrize(
    ("env", "window"),
    [({}, 100_000), ({"LLM_CONTEXT_CHARS": "8000"}, 2000), ({"LLM_CONTEXT_TOKENS": "4096"}, 4096)],
)
def test_the_old_character_budget_still_sets_the_window(env, window):
    code = "from agent_runtime import settings; print(settings.LLM_CONTEXT_TOKENS)"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LLM_CONTEXT")}
    out = subprocess.run(  # noqa: S603 - our own interpreter and a fixed program
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(out.stdout) == window


# --- Summaries of what no longer fits (LLM_SUMMARY_TOKENS) --------------------------------------


def is_summary_request(payload: dict[str, Any]) -> bool:
    return "tools" not in payload and payload["messages"][0]["content"].startswith("Summarise")


async def test_what_no_longer_fits_can_be_summarised(stream, llm, settings):
    settings.LLM_CONTEXT_TOKENS = 8192
    settings.LLM_SUMMARY_TOKENS = 200
    summaries: list[dict[str, Any]] = []

    def respond(payload: dict[str, Any]) -> fakellm.Script:
        if is_summary_request(payload):
            summaries.append(payload)
            return fakellm.text(f"SUMMARY-{len(summaries)}")
        used = fakellm.prompt_tokens(payload)  # reported, so the runtime calibrates
        return fakellm.text(long_answer(len(llm.requests)), usage=(used, 400))

    llm.responder = respond
    await new_session(agent="coder")
    for n in range(8):
        chunks = await stream.send("s1", user(f"Question {n}: " + PROSE * 4))
        assert text_of(chunks).startswith("Answer")
    assert len(summaries) >= 2
    first = summaries[0]["messages"][1]["content"]
    assert first.startswith("user: Question 0:") and "The summary so far" not in first
    assert "The summary so far:\nSUMMARY-1\n" in summaries[1]["messages"][1]["content"]
    turns = [r for r in llm.requests if not is_summary_request(r)]
    last = turns[-1]["messages"][0]["content"]
    assert f"A summary of the earliest of them:\nSUMMARY-{len(summaries)}" in last
    assert all(fakellm.prompt_tokens(r) <= 8192 - 2048 for r in turns)
    rows = await llm_rows()
    assert sum(r.purpose == "summary" for r in rows) == len(summaries)
    # Never the same thing summarised twice: the summary is cached with what it covers.
    contents = [s["messages"][1]["content"] for s in summaries]
    assert len(set(contents)) == len(contents)


async def test_a_failed_summary_leaves_the_plain_note(stream, llm, settings):
    settings.LLM_CONTEXT_TOKENS = 4096
    settings.LLM_SUMMARY_TOKENS = 200

    def respond(payload: dict[str, Any]) -> fakellm.Script:
        if is_summary_request(payload):
            return fakellm.status(500)
        return fakellm.text(long_answer(len(llm.requests)))

    llm.responder = respond
    await new_session(agent="coder")
    for n in range(3):
        chunks = await stream.send("s1", user(f"Question {n}: " + PROSE * 4))
        assert text_of(chunks).startswith("Answer")
    last = [r for r in llm.requests if not is_summary_request(r)][-1]["messages"][0]["content"]
    assert "left out" in last and "A summary of the earliest" not in last
    assert any(is_summary_request(r) for r in llm.requests)
