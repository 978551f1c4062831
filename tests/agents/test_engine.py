"""The agent loop over the stream endpoint, against a real local HTTP server playing the LLM."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from agents.models import AgentContext, ToolCall
from approvals.models import Approval
from sessions import locks
from sessions.models import AgentSession, LLMRequest, Message
from sessions.services import session_create
from tests import fakellm
from tests.conftest import parse_sse
from tests.history import assert_strict, text_of

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def new_session(session_id: str = "s1", agent: str | None = None) -> None:
    session_create(session_id=session_id)
    if agent:
        AgentContext.objects.filter(session_id=session_id).update(current_agent=agent)


@sync_to_async
def history(session_id: str = "s1") -> list[dict[str, Any]]:
    return [m.to_openai() for m in Message.objects.filter(session_id=session_id).order_by("seq")]


@sync_to_async
def current_agent(session_id: str = "s1") -> str:
    return AgentContext.objects.get(session_id=session_id).current_agent


@sync_to_async
def tool_flags(session_id: str = "s1") -> list[bool]:
    return list(
        LLMRequest.objects.filter(session_id=session_id).values_list("has_tool_calls", flat=True)
    )


def user(content: str, **extra: Any) -> dict[str, Any]:
    return {"type": "user_message", "content": content, "role": "user", **extra}


def result(call_id: str, value: Any = "ok", **extra: Any) -> dict[str, Any]:
    return {"type": "tool_result", "call_id": call_id, "result": value, **extra}


async def test_it_routes_then_streams_a_text_reply(stream, llm):
    await new_session()
    llm.enqueue(fakellm.classify("coder", 0.8), fakellm.text("Hello there, friend."))
    chunks = await stream.send("s1", user("write a function"))
    switched = chunks[0]
    assert switched["type"] == "agent_switched"
    assert switched["content"] == "Switched to coder agent"
    assert switched["is_final"] is False
    assert switched["metadata"]["from_agent"] == "orchestrator"
    assert switched["metadata"]["to_agent"] == "coder"
    assert switched["metadata"]["confidence"] == "high"  # a string: the IDE types it String?
    assert switched["metadata"]["score"] == 0.8
    tokens = [c for c in chunks if c["type"] == "assistant_message"]
    assert len(tokens) > 2  # streamed, not one blob
    assert all(c["token"] == c["content"] for c in tokens)
    assert text_of(chunks) == "Hello there, friend."
    assert await current_agent() == "coder"
    assert await history() == [
        {"role": "user", "content": "write a function"},
        {"role": "assistant", "content": "Hello there, friend."},
    ]
    classify_request, turn_request = llm.requests
    assert classify_request["response_format"] == {"type": "json_object"}
    assert turn_request["stream"] is True
    assert turn_request["messages"][0]["role"] == "system"
    assert turn_request["messages"][1:] == [{"role": "user", "content": "write a function"}]
    assert {t["function"]["name"] for t in turn_request["tools"]} >= {"write_file", "switch_mode"}


async def test_it_falls_back_to_keywords_when_the_classifier_fails(stream, llm):
    await new_session()
    llm.enqueue(fakellm.text("not json at all"), fakellm.text("Looking into it."))
    chunks = await stream.send("s1", user("there is a bug, the app crashes with a traceback"))
    assert chunks[0]["metadata"]["to_agent"] == "debug"
    assert "keyword" in chunks[0]["metadata"]["reason"]
    assert await current_agent() == "debug"


async def test_it_forces_the_agent_the_client_names(stream, llm):
    await new_session()
    llm.enqueue(fakellm.text("Hi."))
    chunks = await stream.send("s1", user("hello", agent_type="ask"))
    assert chunks[0]["metadata"] == {
        "from_agent": "orchestrator",
        "to_agent": "ask",
        "reason": "User requested",
        "confidence": "high",
        "score": None,
    }
    assert len(llm.requests) == 1  # no classification


@pytest.mark.parametrize(
    ("classified", "level"),
    [(1.0, "high"), (0.8, "high"), (0.79, "medium"), (0.5, "medium"), (0.49, "low"), (0.0, "low")],
)
async def test_it_names_the_routers_confidence_as_a_level(stream, llm, classified, level):
    await new_session()
    llm.enqueue(fakellm.classify("debug", classified), fakellm.text("On it."))
    chunks = await stream.send("s1", user("look at this"))
    assert chunks[0]["metadata"]["confidence"] == level
    assert chunks[0]["metadata"]["score"] == classified


async def test_it_sends_a_tool_call_and_continues_with_the_result(stream, llm):
    await new_session(agent="coder")
    llm.enqueue(
        fakellm.tool_calls([("c1", "read_file", '{"path": "app.py"}')], text_before="Let me look."),
        fakellm.text("The file says hi."),
    )
    chunks = await stream.send("s1", user("what is in app.py?"))
    assert text_of(chunks) == "Let me look."
    call = chunks[-1]
    assert call["type"] == "tool_call"
    assert call["call_id"] == "c1" and call["tool_name"] == "read_file"
    assert call["arguments"] == {"path": "app.py"}
    assert call["requires_approval"] is False
    chunks = await stream.send("s1", result("c1", {"content": "print('hi')"}))
    assert text_of(chunks) == "The file says hi."
    messages = await history()
    assert_strict(messages)
    assert messages[1]["content"] == "Let me look."
    assert messages[2] == {
        "role": "tool",
        "content": '{"content": "print(\'hi\')"}',
        "tool_call_id": "c1",
        "name": "read_file",
    }
    assert llm.requests[-1]["messages"][-1]["role"] == "tool"
    assert await tool_flags() == [True, False]  # what each model reply did


async def test_it_sends_parallel_calls_one_at_a_time(stream, llm):
    await new_session(agent="coder")
    llm.enqueue(
        fakellm.tool_calls(
            [("a", "read_file", '{"path": "a.py"}'), ("b", "read_file", '{"path": "b.py"}')],
            interleave=True,
        ),
        fakellm.text("Both read."),
    )
    first = await stream.send("s1", user("read both"))
    assert first[-1]["call_id"] == "a"
    second = await stream.send("s1", result("a", "A"))
    assert [c["type"] for c in second] == ["tool_call"]
    assert second[0]["call_id"] == "b" and second[0]["arguments"] == {"path": "b.py"}
    assert len(llm.requests) == 1  # the model waits until every call has a result
    third = await stream.send("s1", result("b", "B"))
    assert text_of(third) == "Both read."
    assert_strict(await history())


async def test_it_hands_off_with_switch_mode(stream, llm):
    await new_session(agent="coder")
    llm.enqueue(
        fakellm.tool_calls([("h", "switch_mode", '{"mode": "debug", "reason": "a crash"}')]),
        fakellm.text("Debugging now."),
    )
    chunks = await stream.send("s1", user("it crashes"))
    assert [c["type"] for c in chunks[:1]] == ["agent_switched"]
    assert chunks[0]["metadata"] == {
        "from_agent": "coder",
        "to_agent": "debug",
        "reason": "a crash",
        "confidence": None,
        "score": None,
    }
    assert chunks[0]["is_final"] is False
    assert not any(c["type"] == "tool_call" for c in chunks)  # never sent to the IDE
    assert text_of(chunks) == "Debugging now."
    assert await current_agent() == "debug"
    debug_prompt = llm.requests[-1]["messages"][0]["content"]
    assert "debug" in debug_prompt.lower()
    assert "write_file" not in {t["function"]["name"] for t in llm.requests[-1]["tools"]}
    assert_strict(await history())


async def test_it_refuses_a_forbidden_tool_and_the_model_recovers(stream, llm):
    await new_session(agent="ask")
    llm.enqueue(
        fakellm.tool_calls([("w", "write_file", '{"path": "x.py", "content": "1"}')]),
        fakellm.text("I cannot write files; here is the code instead."),
    )
    chunks = await stream.send("s1", user("write x.py"))
    assert not any(c["type"] == "tool_call" for c in chunks)
    assert text_of(chunks).startswith("I cannot write files")
    messages = await history()
    assert_strict(messages)
    refusal = messages[2]
    assert refusal["role"] == "tool" and refusal["tool_call_id"] == "w"
    assert refusal["content"].startswith("Error: The ask agent may not use write_file")
    call = await sync_to_async(ToolCall.objects.get)(call_id="w")
    assert call.status == "refused"


async def test_it_refuses_a_path_outside_the_file_rules(stream, llm):
    await new_session(agent="architect")
    llm.enqueue(
        fakellm.tool_calls([("w", "write_file", '{"path": "src/app.py", "content": "1"}')]),
        fakellm.tool_calls([("m", "write_file", '{"path": "docs/design.md", "content": "#"}')]),
    )
    chunks = await stream.send("s1", user("document the design"))
    assert chunks[-1]["call_id"] == "m"
    assert chunks[-1]["requires_approval"] is True
    messages = await history()
    assert "may only write Markdown" in messages[2]["content"]


@pytest.mark.parametrize("raw", ['{"path": "a.py"', "[1, 2]", '"just a string"'])
async def test_it_refuses_malformed_arguments_and_keeps_history_valid(stream, llm, raw):
    await new_session(agent="coder")
    llm.enqueue(fakellm.tool_calls([("bad", "read_file", raw)]), fakellm.text("Sorry."))
    chunks = await stream.send("s1", user("read"))
    assert text_of(chunks) == "Sorry."
    messages = await history()
    assert_strict(messages)
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert messages[2]["content"].startswith("Error:")
    assert "JSON" in messages[2]["content"]


async def test_it_stops_a_model_that_keeps_calling_forbidden_tools(stream, llm, settings):
    settings.MAX_LLM_ROUNDS_PER_REQUEST = 3
    await new_session(agent="ask")
    forbidden = fakellm.tool_calls([("x", "execute_command", '{"command": "ls"}')])
    llm.enqueue(*[forbidden] * 5)
    chunks = await stream.send("s1", user("run ls"))
    assert chunks[-1]["type"] == "error"
    assert "3 model calls" in chunks[-1]["error"]
    assert len(llm.requests) == 3
    assert_strict(await history())


async def test_it_waits_for_approval_then_emits_the_approved_call(stream, llm):
    await new_session(agent="coder")
    llm.enqueue(
        fakellm.tool_calls([("e", "execute_command", '{"command": "pytest -q"}')]),
        fakellm.text("Tests pass."),
    )
    chunks = await stream.send("s1", user("run the tests"))
    assert chunks[-1]["requires_approval"] is True
    approval = await sync_to_async(Approval.objects.get)(call_id="e")
    assert approval.status == "pending" and approval.tool_name == "execute_command"
    decided = await stream.send(
        "s1", {"type": "hitl_decision", "call_id": "e", "decision": "approve"}
    )
    assert [c["type"] for c in decided] == ["tool_call"]
    assert decided[0]["call_id"] == "e"
    assert decided[0]["requires_approval"] is False
    assert decided[0]["arguments"] == {"command": "pytest -q"}
    await sync_to_async(approval.refresh_from_db)()
    assert approval.status == "approved" and approval.decided_by == "ide"
    done = await stream.send("s1", result("e", "3 passed"))
    assert text_of(done) == "Tests pass."
    assert_strict(await history())


async def test_it_emits_edited_arguments(stream, llm):
    await new_session(agent="coder")
    llm.enqueue(fakellm.tool_calls([("e", "execute_command", '{"command": "rm -rf /"}')]))
    await stream.send("s1", user("clean up"))
    decided = await stream.send(
        "s1",
        {
            "type": "hitl_decision",
            "call_id": "e",
            "decision": "edit",
            "modified_arguments": {"command": "rm -rf build"},
        },
    )
    assert decided[0]["arguments"] == {"command": "rm -rf build"}
    approval = await sync_to_async(Approval.objects.get)(call_id="e")
    assert approval.status == "edited"
    assert approval.edited_arguments == {"command": "rm -rf build"}


async def test_a_rejection_goes_back_to_the_model(stream, llm):
    await new_session(agent="coder")
    llm.enqueue(
        fakellm.tool_calls([("e", "execute_command", '{"command": "rm -rf /"}')]),
        fakellm.text("Understood, I will not delete anything."),
    )
    await stream.send("s1", user("clean up"))
    chunks = await stream.send(
        "s1",
        {"type": "hitl_decision", "call_id": "e", "decision": "reject", "feedback": "too risky"},
    )
    # The IDE user reads who rejected it and why, in a frame of its own, then the model.
    assert chunks[0]["metadata"]["decision"]["decided_by"] == "ide"
    assert chunks[0]["metadata"]["decision"]["feedback"] == "too risky"
    assert text_of(chunks) == (
        "The execute_command call was rejected by the IDE user: too risky\n\n"
        "Understood, I will not delete anything."
    )
    messages = await history()
    assert_strict(messages)
    assert messages[2]["content"] == (
        "The execute_command call was rejected by the IDE user: too risky"
    )


@pytest.mark.parametrize(("error", "status"), [(None, "approved"), ("user said no", "rejected")])
async def test_a_tool_result_resolves_a_pending_approval(stream, llm, error, status):
    await new_session(agent="coder")
    llm.enqueue(
        fakellm.tool_calls([("w", "write_file", '{"path": "a.py", "content": "x"}')]),
        fakellm.text("Noted."),
    )
    await stream.send("s1", user("write a.py"))
    message = result("w", "written") if error is None else result("w", None, error=error)
    await stream.send("s1", message)
    approval = await sync_to_async(Approval.objects.get)(call_id="w")
    assert approval.status == status
    assert approval.decided_by_kind == "ide"
    messages = await history()
    assert_strict(messages)
    if error:
        assert messages[2]["content"] == (
            "The write_file call was rejected by the IDE user: user said no"
        )


async def test_a_new_user_message_closes_open_calls(stream, llm):
    await new_session(agent="coder")
    llm.enqueue(
        fakellm.tool_calls([("w", "write_file", '{"path": "a.py", "content": "x"}')]),
        fakellm.text("Fine."),
    )
    await stream.send("s1", user("write a.py"))
    await stream.send("s1", user("never mind"))
    messages = await history()
    assert_strict(messages)
    assert messages[2]["content"] == (
        "The write_file call was cancelled by system: the user sent a new message instead."
    )
    approval = await sync_to_async(Approval.objects.get)(call_id="w")
    assert approval.status == "cancelled"


async def test_an_explicit_switch_needs_no_model(stream, llm):
    await new_session()
    chunks = await stream.send("s1", {"type": "switch_agent", "agent_type": "architect"})
    assert [c["type"] for c in chunks] == ["agent_switched"]
    assert chunks[0]["is_final"] is True
    assert chunks[0]["metadata"] == {
        "from_agent": "orchestrator",
        "to_agent": "architect",
        "reason": "User requested",
        "confidence": "high",
        "score": None,
    }
    assert llm.requests == []
    again = await stream.send(
        "s1", {"type": "switch_agent", "agent_type": "architect", "reason": "for the plan"}
    )
    assert again[0]["metadata"]["to_agent"] == "architect"
    assert again[0]["metadata"]["confidence"] == "high"
    chunks = await stream.send(
        "s1", {"type": "switch_agent", "agent_type": "ask", "reason": "for the plan"}
    )
    assert chunks[0]["metadata"]["reason"] == "for the plan"
    assert chunks[0]["metadata"]["confidence"] == "high"


async def test_it_runs_the_current_agent_again_on_empty_content(stream, llm):
    await new_session(agent="coder")
    llm.enqueue(fakellm.text("Again."))
    chunks = await stream.send("s1", user(""))
    assert text_of(chunks) == "Again."
    assert await history() == [{"role": "assistant", "content": "Again."}]


@pytest.mark.parametrize(
    ("script", "attempts", "words"),
    [
        (fakellm.status(500, {"error": {"message": "boom"}}), 2, "500"),  # retried once
        (fakellm.status(400, {"error": {"message": "bad model"}}), 1, "400"),
        (fakellm.garbage(), 1, "model"),
    ],
)
async def test_an_llm_failure_is_an_error_chunk_never_text(stream, llm, script, attempts, words):
    await new_session(agent="coder")
    llm.enqueue(*[script] * attempts)
    chunks = await stream.send("s1", user("hi"))
    assert [c["type"] for c in chunks] == ["error"]
    assert words in chunks[0]["error"]
    assert chunks[0]["content"] == chunks[0]["error"]
    assert await history() == [{"role": "user", "content": "hi"}]
    assert len(llm.requests) == attempts
    failure = await sync_to_async(LLMRequest.objects.get)(session_id="s1")
    assert failure.success is False
    llm.enqueue(fakellm.text("Back."))  # the session stays usable
    assert text_of(await stream.send("s1", user("again"))) == "Back."


async def test_a_stream_dropped_midway_keeps_what_was_shown(stream, llm):
    await new_session(agent="coder")
    llm.enqueue(fakellm.drop_after(3))
    chunks = await stream.send("s1", user("hi"))
    assert chunks[-1]["type"] == "error"
    shown = text_of(chunks)
    assert shown
    messages = await history()
    assert messages[-1] == {"role": "assistant", "content": shown}
    assert_strict(messages)


async def test_an_open_breaker_fails_fast_and_routing_falls_back(stream, llm, settings):
    from agents.llm import get_breaker

    settings.LLM_BREAKER_FAIL_MAX = 1
    breaker = get_breaker()
    breaker.open()
    await new_session()
    loop = asyncio.get_running_loop()
    started = loop.time()
    chunks = await stream.send("s1", user("fix this bug"))
    assert loop.time() - started < 3
    assert chunks[0]["type"] == "agent_switched"
    assert chunks[0]["metadata"]["to_agent"] == "debug"
    assert chunks[-1]["type"] == "error"
    assert "circuit breaker" in chunks[-1]["error"]
    assert llm.requests == []


async def test_it_sends_keepalives_while_the_model_is_slow(stream, llm, settings):
    settings.KEEPALIVE_SECONDS = 0.1
    await new_session(agent="coder")
    llm.enqueue(fakellm.text("Slow.", first_token_delay=0.5))
    response = await stream.post("s1", user("hi"))
    raw = b"".join([part async for part in response.streaming_content])
    assert raw.startswith(b": keepalive\n\n")
    assert text_of(__import__("tests.conftest").conftest.parse_sse(raw)) == "Slow."


async def test_a_turn_finishes_after_the_client_goes_away(stream, llm):
    await new_session(agent="coder")
    llm.enqueue(fakellm.text("one two three four five six", delay=0.05))
    response = await stream.post("s1", user("hi"))
    iterator = response.streaming_content.__aiter__()
    await iterator.__anext__()
    await iterator.aclose()  # the client hangs up after the first chunk
    for _ in range(100):
        messages = await history()
        if len(messages) == 2:
            break
        await asyncio.sleep(0.05)
    assert messages[-1] == {"role": "assistant", "content": "one two three four five six"}


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"session_id": "s1", "type": "user_message", "content": "flat"}, 400, "flat"),
        ({"session_id": "s1", "message": {"type": "shout"}}, 400, "unknown message type"),
        ({"session_id": "s1", "message": "hi"}, 400, "JSON object"),
        ({"session_id": "s1", "message": {"type": "tool_result"}}, 400, "call_id"),
        ({"session_id": "s1", "message": {"type": "tool_result", "call_id": 5}}, 400, "string"),
        (
            {"session_id": "s1", "message": {"type": "tool_result", "call_id": "x", "error": 1}},
            400,
            "error",
        ),
        ({"session_id": "s1", "message": {"type": "tool_result", "call_id": "nope"}}, 404, "nope"),
        ({"session_id": "s1", "message": {"type": "switch_agent"}}, 400, "agent_type"),
        (
            {"session_id": "s1", "message": {"type": "switch_agent", "agent_type": "wizard"}},
            400,
            "Unknown agent",
        ),
        (
            {"session_id": "s1", "message": {"type": "user_message", "agent_type": "wizard"}},
            400,
            "Unknown agent",
        ),
        (
            {"session_id": "s1", "message": {"type": "hitl_decision", "call_id": "c"}},
            400,
            "decision",
        ),
        (
            {
                "session_id": "s1",
                "message": {"type": "hitl_decision", "call_id": "c", "decision": "edit"},
            },
            400,
            "modified_arguments",
        ),
        (
            {
                "session_id": "s1",
                "message": {
                    "type": "hitl_decision",
                    "call_id": "c",
                    "decision": "edit",
                    "modified_arguments": [1],
                },
            },
            400,
            "object",
        ),
        (
            {
                "session_id": "s1",
                "message": {"type": "hitl_decision", "call_id": "c", "decision": "approve"},
            },
            404,
            "no approval",
        ),
        ({"session_id": "ghost", "message": {"type": "user_message", "content": "x"}}, 404, ""),
        ({"message": {"type": "user_message"}}, 400, "session_id"),
        ({"session_id": "s1", "message": {"type": "user_message"}, "wait": "no"}, 400, "wait"),
    ],
)
async def test_it_refuses_bad_messages_before_streaming(stream, llm, body, status, words):
    """A body that is not a stream request is an HTTP 400; any other refusal is an error
    chunk carrying its status (the Gateway shows non-200 replies only as a bare code)."""
    await new_session(agent="coder")
    response = await stream.raw(body)
    if response["Content-Type"] == "application/json":  # only ever for a malformed body
        assert status == 400
        assert response.status_code == 400, response.content
        assert words in response.json()["detail"]
    else:
        assert response.status_code == 200
        raw = b"".join([part async for part in response.streaming_content])
        (chunk,) = parse_sse(raw)
        assert chunk["type"] == "error" and chunk["is_final"] is True
        assert chunk["metadata"]["status"] == status
        assert words in chunk["error"]
    assert await history() == []
    assert llm.requests == []


async def test_it_refuses_malformed_json_and_a_result_for_a_finished_call(stream, llm):
    await new_session(agent="coder")
    response = await stream.raw("{oops")
    assert response.status_code == 400
    assert "malformed JSON" in response.json()["detail"]
    llm.enqueue(fakellm.tool_calls([("c1", "read_file", '{"path": "a"}')]), fakellm.text("ok"))
    await stream.send("s1", user("read a"))
    await stream.send("s1", result("c1"))
    again = await stream.refused("s1", result("c1"))
    assert again["metadata"]["status"] == 409
    assert "not waiting" in again["error"]
    decided = await stream.post("s1", {"type": "hitl_decision", "call_id": "c1", "decision": "x"})
    assert decided.status_code == 400


async def test_it_answers_409_when_busy_and_asked_not_to_wait(stream, llm, settings):
    settings.TURN_LOCK_WAIT_SECONDS = 0.2
    await new_session(agent="coder")
    assert await sync_to_async(locks.try_claim)("s1", "someone-else")
    response = await stream.refused("s1", user("hi"), wait=False)
    assert response["metadata"] == {"status": 409, "code": "session_busy"}
    assert "busy" in response["error"]
    waited = await stream.refused("s1", user("hi"))  # waits, then gives up
    assert waited["metadata"]["status"] == 409
    assert await history() == []
    await sync_to_async(locks.release)(locks.TurnLease("s1", "someone-else"))
    llm.enqueue(fakellm.text("Free."))
    assert text_of(await stream.send("s1", user("hi"))) == "Free."


async def test_two_requests_for_one_session_never_interleave(stream, llm):
    await new_session(agent="coder")
    llm.enqueue(
        fakellm.text("first reply here", delay=0.03), fakellm.text("second reply here", delay=0.03)
    )
    one, two = await asyncio.gather(stream.send("s1", user("one")), stream.send("s1", user("two")))
    assert {text_of(one), text_of(two)} == {"first reply here", "second reply here"}
    roles = [m["role"] for m in await history()]
    assert roles == ["user", "assistant", "user", "assistant"]


async def test_switches_are_capped(stream, llm, settings):
    settings.MAX_AGENT_SWITCHES = 1
    await new_session()
    await stream.send("s1", {"type": "switch_agent", "agent_type": "coder"})
    response = await stream.refused("s1", {"type": "switch_agent", "agent_type": "debug"})
    assert response["metadata"]["status"] == 409
    assert "limit" in response["error"]
    assert await current_agent() == "coder"


async def test_single_agent_mode_uses_the_universal_agent(stream, llm, settings):
    settings.MULTI_AGENT_MODE = False
    await new_session("solo")
    llm.enqueue(fakellm.text("Universal here."))
    chunks = await stream.send("solo", user("hello"))
    assert [c["type"] for c in chunks if c["type"] != "assistant_message"] == []
    assert await current_agent("solo") == "universal"
    assert "switch_mode" not in {t["function"]["name"] for t in llm.requests[0]["tools"]}


async def test_the_session_row_is_free_after_every_turn(stream, llm):
    await new_session(agent="coder")
    llm.enqueue(fakellm.status(500), fakellm.status(500))
    await stream.send("s1", user("hi"))
    row = await sync_to_async(AgentSession.objects.get)(pk="s1")
    assert row.turn_owner == ""


async def test_it_rate_limits_per_session(stream, llm, settings):
    settings.RATE_LIMIT_MESSAGES = "2/m"
    await new_session(agent="coder")
    await new_session("other", agent="coder")
    for _ in range(2):
        await stream.send("s1", user("hi"))
    limited = await stream.refused("s1", user("hi"))
    assert limited["metadata"] == {"status": 429, "code": "rate_limited", "retry_after": 60}
    assert "rate limit" in limited["error"]
    assert len(await history()) == 4  # the refused message was not stored
    await stream.send("other", user("hi"))  # other sessions are unaffected


async def test_it_refuses_an_oversized_stream_body(stream, llm, settings):
    settings.MAX_REQUEST_BYTES = 4096
    await new_session(agent="coder")
    response = await stream.post("s1", user("x" * 10_000))
    assert response.status_code == 413
    assert "too large" in response.json()["detail"]
    assert await history() == []


async def test_a_long_session_is_fitted_to_the_context_but_stored_whole(stream, llm, settings):
    settings.LLM_CONTEXT_TOKENS = 4_000  # the coder's prompt and tools take about 2,300
    settings.LLM_ANSWER_RESERVE_TOKENS = 500
    await new_session(agent="coder")
    for n in range(6):
        llm.enqueue(fakellm.text(f"answer {n} " + "a" * 1_000))
        await stream.send("s1", user(f"question {n} " + "q" * 1_000))
    sent = llm.requests[-1]["messages"]
    assert [m["role"] for m in sent].count("system") == 1  # the note is in the one prompt
    assert "left out" in sent[0]["content"]
    assert sent[1]["role"] == "user"
    assert sent[-1]["content"].startswith("question 5")
    assert fakellm.prompt_tokens(llm.requests[-1]) <= 4_000
    assert len(await history()) == 12  # nothing lost from the stored history


async def test_a_misconfigured_llm_fails_the_turn_cleanly(stream, settings, anon):
    from agents.llm import reset_provider

    settings.LLM_BASE_URL = "localhost:11434"  # no scheme: the client refuses it
    reset_provider()
    try:
        await new_session(agent="coder")
        chunks = await stream.send("s1", user("hi"))
        assert [c["type"] for c in chunks] == ["error"]
        row = await sync_to_async(AgentSession.objects.get)(pk="s1")
        assert row.turn_owner == ""  # the session is free again
        health = await sync_to_async(anon.get)("/health")
        assert health.status_code == 200
        assert health.json()["checks"]["llm"]["status"] == "error"
        assert health.json()["status"] == "degraded"
    finally:
        reset_provider()


async def test_a_refused_message_writes_nothing(stream, llm, settings):
    settings.MAX_AGENT_SWITCHES = 0
    await new_session(agent="coder")
    response = await stream.refused("s1", user("hello", agent_type="debug"))
    assert response["metadata"]["status"] == 409
    assert await history() == []


async def test_a_late_resume_does_nothing_once_the_session_moved_on(stream, llm):
    from agents.engine import Turn

    await new_session(agent="coder")
    llm.enqueue(
        fakellm.tool_calls([("w", "write_file", '{"path": "a.py", "content": "x"}')]),
        fakellm.text("Something else then."),
    )
    await stream.send("s1", user("write a.py"))

    @sync_to_async
    def staff_approves() -> None:
        from approvals.services import approval_decide

        approval_decide(
            session_id="s1",
            call_id="w",
            decision="approve",
            decided_by_kind="staff",
            decided_by="staff:bob",
        )

    await staff_approves()
    await stream.send("s1", user("never mind, do something else"))  # before the resume runs
    requests = len(llm.requests)
    emitted: list[dict[str, Any]] = []

    async def collect(chunk: dict[str, Any]) -> None:
        emitted.append(chunk)

    await Turn(session_id="s1", emit=collect).resume(call_id="w")
    assert emitted == [] and len(llm.requests) == requests
    assert_strict(await history())


async def test_an_http_client_can_follow_a_session_live(stream, llm):
    from tests.conftest import parse_sse

    await new_session(agent="coder")
    response = await stream.client.get("/sessions/s1/events", headers=stream.headers)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    frames = response.streaming_content.__aiter__()
    assert await frames.__anext__() == b": keepalive\n\n"  # live at once
    llm.enqueue(fakellm.tool_calls([("c1", "read_file", '{"path": "a"}')], text_before="Look."))
    await stream.send("s1", user("read a"))  # another client's turn
    seen: list[dict[str, Any]] = []
    while not (seen and seen[-1]["is_final"]):
        seen += parse_sse(await asyncio.wait_for(frames.__anext__(), 5))
    assert text_of(seen) == "Look."
    assert seen[-1]["type"] == "tool_call" and seen[-1]["call_id"] == "c1"
    await frames.aclose()
    missing = await stream.client.get("/sessions/nope/events", headers=stream.headers)
    assert missing.status_code == 404


async def test_deeply_nested_json_is_a_400_not_a_500(stream, llm):
    await new_session(agent="coder")
    nested = "[" * 100_000 + "]" * 100_000
    response = await stream.client.post(
        "/agent/message/stream",
        f'{{"session_id": "s1", "message": {nested}}}',
        content_type="application/json",
        headers=stream.headers,
    )
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]


async def test_a_lone_surrogate_in_a_tool_result_is_stored_as_a_replacement(stream, llm):
    await new_session(agent="coder")
    llm.enqueue(fakellm.tool_calls([("c1", "read_file", '{"path": "a"}')]), fakellm.text("ok"))
    await stream.send("s1", user("read a"))
    body = (
        '{"session_id": "s1", "message": '
        '{"type": "tool_result", "call_id": "c1", "result": "emoji cut \\ud83d here"}}'
    )
    response = await stream.client.post(
        "/agent/message/stream", body, content_type="application/json", headers=stream.headers
    )
    assert response.status_code == 200
    [part async for part in response.streaming_content]
    messages = await history()
    assert messages[2]["content"] == "emoji cut \ufffd here"


async def test_a_nul_in_a_message_or_a_tool_result_is_stored_as_a_replacement(stream, llm):
    # PostgreSQL's text refuses NUL: these were 500s there (found while fuzzing the API).
    await new_session(agent="coder")
    llm.enqueue(fakellm.tool_calls([("c1", "read_file", '{"path": "a"}')]), fakellm.text("ok"))
    await stream.send("s1", user("read a\x00b"))
    refused = await stream.refused("s1", result("c\x00", "x"))
    assert refused["metadata"]["status"] == 404
    await stream.send("s1", result("c1", "binary \x00 here"))
    messages = await history()
    assert messages[0]["content"] == "read a\ufffdb"
    assert messages[2]["content"] == "binary \ufffd here"


async def test_a_turn_cancelled_before_its_first_step_still_ends_its_stream(llm):
    from agents import turns
    from agents.messages import ClientMessage

    await new_session(agent="coder")
    listener: asyncio.Queue[Any] = asyncio.Queue()
    task = await turns.submit(
        "s1", ClientMessage(type="user_message", content="hi"), listener=listener
    )
    task.cancel()  # before the task ever ran
    chunks = []
    while (chunk := await asyncio.wait_for(listener.get(), 5)) is not None:
        chunks.append(chunk)
    assert [c["type"] for c in chunks] == ["error"]
    assert turns.running_turns() == 0
    for _ in range(50):
        row = await sync_to_async(AgentSession.objects.get)(pk="s1")
        if row.turn_owner == "":
            break
        await asyncio.sleep(0.02)
    assert row.turn_owner == ""


async def test_a_caller_leaving_during_the_claim_does_not_orphan_the_lease(llm):
    import time as clock

    from agents import turns
    from agents.messages import ClientMessage

    await new_session(agent="coder")
    llm.enqueue(fakellm.text("Answered anyway."))
    submitting = asyncio.create_task(
        turns.submit(
            "s1",
            ClientMessage(type="user_message", content="hi"),
            precheck=lambda: clock.sleep(0.3),  # a slow claim, running in the database thread
        )
    )
    await asyncio.sleep(0.1)
    submitting.cancel()  # the client hangs up mid-claim
    with pytest.raises(asyncio.CancelledError):
        await submitting
    for _ in range(100):
        if len(await history()) == 2:
            break
        await asyncio.sleep(0.05)
    assert await history() == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Answered anyway."},
    ]
    for _ in range(50):
        row = await sync_to_async(AgentSession.objects.get)(pk="s1")
        if row.turn_owner == "":
            break
        await asyncio.sleep(0.02)
    assert row.turn_owner == ""


async def test_the_events_stream_can_replay_outstanding_calls(stream, llm):
    from tests.conftest import parse_sse

    await new_session(agent="coder")
    llm.enqueue(fakellm.tool_calls([("c1", "read_file", '{"path": "a"}')]))
    await stream.send("s1", user("read a"))
    response = await stream.client.get(
        "/sessions/s1/events?replay=outstanding", headers=stream.headers
    )
    frames = response.streaming_content.__aiter__()
    assert await frames.__anext__() == b": keepalive\n\n"
    (call,) = parse_sse(await asyncio.wait_for(frames.__anext__(), 5))
    assert call["type"] == "tool_call" and call["call_id"] == "c1"
    await frames.aclose()


# --- The model is told the truth (PROTOCOL §5) -------------------------------------------------


def tool_message_sent(request: dict[str, Any], call_id: str) -> str:
    (message,) = [
        m for m in request["messages"] if m["role"] == "tool" and m["tool_call_id"] == call_id
    ]
    return str(message["content"])


async def test_after_an_edit_the_model_reads_the_arguments_that_ran_and_the_feedback(stream, llm):
    await new_session(agent="coder")
    llm.enqueue(
        fakellm.tool_calls([("w1", "write_file", '{"path": "a.py", "content": "x = 1"}')]),
        fakellm.text("Noted."),
    )
    asked = await stream.send("s1", user("write a.py"))
    assert asked[-1]["requires_approval"] is True
    released = await stream.send(
        "s1",
        {
            "type": "hitl_decision",
            "call_id": "w1",
            "decision": "edit",
            "modified_arguments": {"path": "b.py", "content": "x = 2"},
            "feedback": "b.py is the right file",
        },
    )
    (call,) = released
    assert call["type"] == "tool_call" and call["requires_approval"] is False
    assert call["arguments"] == {"path": "b.py", "content": "x = 2"}
    assert call["metadata"]["decision"] == {
        "status": "edited",
        "decided_by": "ide",
        "feedback": "b.py is the right file",
        "summary": (
            "The write_file call was edited by the IDE user before it ran: it ran with "
            '{"content": "x = 2", "path": "b.py"} instead of {"content": "x = 1", "path": '
            '"a.py"}. Feedback: b.py is the right file'
        ),
    }
    await stream.send("s1", result("w1", "written"))
    told = tool_message_sent(llm.requests[-1], "w1")
    assert told == (
        "The write_file call was edited by the IDE user before it ran: it ran with "
        '{"content": "x = 2", "path": "b.py"} instead of {"content": "x = 1", "path": "a.py"}. '
        "Feedback: b.py is the right file\n\nwritten"
    )


async def test_approve_with_feedback_reaches_the_model(stream, llm):
    await new_session(agent="coder")
    llm.enqueue(
        fakellm.tool_calls([("x1", "execute_command", '{"command": "make test"}')]),
        fakellm.text("Tests ran."),
    )
    await stream.send("s1", user("run the tests"))
    await stream.send(
        "s1",
        {"type": "hitl_decision", "call_id": "x1", "decision": "approve", "feedback": "ok once"},
    )
    await stream.send("s1", result("x1", "12 passed"))
    assert tool_message_sent(llm.requests[-1], "x1") == (
        "The execute_command call was approved by the IDE user: ok once\n\n12 passed"
    )
