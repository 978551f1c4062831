from __future__ import annotations

import json
from typing import Any

import pytest

from agents.demo import DemoModel
from agents.llm import Completion, Done, TextDelta
from agents.registry import AGENTS
from agents.routing import CLASSIFIER_PROMPT, parse_classification, route_by_keywords
from agents.tools import tool_specs


def conversation(agent: str, *history: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "system", "content": AGENTS[agent].prompt}, *history]


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant_call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    function = {"name": name, "arguments": json.dumps(arguments)}
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": call_id, "type": "function", "function": function}],
    }


def tool_result(call_id: str, content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


async def run(
    messages: list[dict[str, Any]], *, agent: str | None = None, **kwargs: Any
) -> tuple[list[str], Completion]:
    """Drain the stream; ``agent`` offers that agent's tools."""
    if agent is not None:
        kwargs["tools"] = tool_specs(AGENTS[agent].tools)
    deltas: list[str] = []
    done: list[Completion] = []
    async for event in DemoModel().stream_chat(messages=messages, **kwargs):
        if isinstance(event, TextDelta):
            assert not done, "a TextDelta arrived after Done"
            deltas.append(event.text)
        else:
            assert isinstance(event, Done)
            done.append(event.completion)
    assert len(done) == 1
    return deltas, done[0]


def calls(completion: Completion) -> list[tuple[str, dict[str, Any]]]:
    result = []
    for call in completion.tool_calls:
        arguments = json.loads(call.arguments)
        assert isinstance(arguments, dict)
        result.append((call.name, arguments))
    return result


@pytest.mark.parametrize(
    "text",
    [
        "Why does this crash with a traceback?",
        "Explain what does the router do",
        "Write an architecture design doc for the cache",
        "Implement a new endpoint for sessions",
        "hello",
    ],
)
async def test_it_classifies_with_keyword_routing(text: str) -> None:
    messages = [{"role": "system", "content": CLASSIFIER_PROMPT}, user(text)]
    _, completion = await run(messages)

    route = parse_classification(completion.text)
    assert route.agent == route_by_keywords(text).agent
    assert json.loads(completion.text)["reasoning"] == "demo model: keyword routing"
    assert completion.tool_calls == []
    assert completion.finish_reason == "stop"


async def test_it_classifies_when_asked_for_a_json_object() -> None:
    messages = [{"role": "system", "content": "Classify."}, user("the test fails with an error")]
    _, completion = await run(messages, response_format={"type": "json_object"})

    assert parse_classification(completion.text).agent == "debug"


@pytest.mark.parametrize(
    ("agent", "text", "tool", "arguments"),
    [
        ("coder", "Please read src/app.py", "read_file", {"path": "src/app.py"}),
        ("ask", "show me `agents/routing.py`.", "read_file", {"path": "agents/routing.py"}),
        ("debug", "open the file README.md", "read_file", {"path": "README.md"}),
        ("coder", "list files", "list_files", {"path": "."}),
        ("ask", "ls", "list_files", {"path": "."}),
        ("ask", "ls docs/", "list_files", {"path": "docs/"}),
        (
            "coder",
            "write notes.py",
            "write_file",
            {"path": "notes.py", "content": "# Written by the demo model\n"},
        ),
        (
            "architect",
            "create file docs/plan.md",
            "write_file",
            {"path": "docs/plan.md", "content": "# Written by the demo model\n"},
        ),
        ("debug", "run pytest -q tests/", "execute_command", {"command": "pytest -q tests/"}),
        ("coder", "Execute: ls -la", "execute_command", {"command": "ls -la"}),
        ("coder", "mkdir build", "create_directory", {"path": "build"}),
        ("ask", 'search for "def route"', "search_in_code", {"query": "def route"}),
        (
            "coder",
            "switch to debug",
            "switch_mode",
            {"mode": "debug", "reason": "the user asked for the debug agent"},
        ),
        (
            "debug",
            "hand off to the coder",
            "switch_mode",
            {"mode": "coder", "reason": "the user asked for the coder agent"},
        ),
        (
            "coder",
            "ask the architect to write docs/plan.md",
            "switch_mode",
            {"mode": "architect", "reason": "the user asked for the architect agent"},
        ),
        ("coder", "I'm done", "attempt_completion", {"result": "[demo] Task complete."}),
        (
            "ask",
            "this is unclear",
            "ask_followup_question",
            {"question": "[demo] Which file do you mean?"},
        ),
        ("universal", "Read app.py", "read_file", {"path": "app.py"}),
        # The earliest trigger in the text wins; "done" and "question" only when nothing else.
        ("coder", "run ls -la", "execute_command", {"command": "ls -la"}),
        ("coder", "read a.py, then run tests", "read_file", {"path": "a.py"}),
        ("ask", "Quick question: open ./.env", "read_file", {"path": "./.env"}),
    ],
)
async def test_it_calls_the_triggered_tool(
    agent: str, text: str, tool: str, arguments: dict[str, Any]
) -> None:
    deltas, completion = await run(conversation(agent, user(text)), agent=agent)

    assert calls(completion) == [(tool, arguments)]
    assert completion.text == f"[demo] I'll use {tool} for that."
    assert "".join(deltas) == completion.text
    assert completion.finish_reason == "tool_calls"
    assert completion.tool_calls[0].id == f"demo_{tool}_0"


@pytest.mark.parametrize(
    ("agent", "text", "tool", "suggestion"),
    [
        ("ask", "write notes.py", "write_file", 'Say "switch to coder"'),
        ("architect", "run make test", "execute_command", 'Say "switch to coder"'),
        ("universal", "switch to debug", "switch_mode", None),
    ],
)
async def test_it_answers_in_text_when_the_tool_is_not_allowed(
    agent: str, text: str, tool: str, suggestion: str | None
) -> None:
    _, completion = await run(conversation(agent, user(text)), agent=agent)

    assert completion.tool_calls == []
    assert f"The {agent} agent cannot use {tool}" in completion.text
    assert (suggestion in completion.text) if suggestion else ("switch to" not in completion.text)


@pytest.mark.parametrize(
    ("text", "tool", "arguments"),
    [
        ("try write_file notes.py", "write_file", {"path": "notes.py"}),
        ("try execute_command", "execute_command", {"command": "echo hello"}),
        ("try to use create_directory tmp/out", "create_directory", {"path": "tmp/out"}),
    ],
)
async def test_it_calls_a_tried_tool_even_when_not_allowed(
    text: str, tool: str, arguments: dict[str, Any]
) -> None:
    _, completion = await run(conversation("ask", user(text)), agent="ask")

    [(name, args)] = calls(completion)
    assert name == tool
    assert args.items() >= arguments.items()


async def test_it_ignores_try_without_a_tool_name() -> None:
    _, completion = await run(conversation("coder", user("try again later")), agent="coder")

    assert completion.tool_calls == []
    assert completion.text.startswith("[demo] I am the demo model answering as the coder agent.")


async def test_it_echoes_anything_else_as_the_current_agent() -> None:
    deltas, completion = await run(conversation("architect", user("Hello there")), agent="ask")

    assert completion.text == (
        "[demo] I am the demo model answering as the architect agent. You said: Hello there "
        "Configure LLM_BASE_URL to use a real model."
    )
    assert len(deltas) > 10
    assert completion.finish_reason == "stop"


async def test_it_does_not_switch_to_the_current_agent() -> None:
    _, completion = await run(conversation("debug", user("switch to debug")), agent="debug")

    assert completion.tool_calls == []
    assert completion.text == "[demo] I am already the debug agent."


async def test_it_emits_parallel_reads() -> None:
    messages = conversation("coder", user("both read a.py and b/c.py"))
    _, completion = await run(messages, agent="coder")

    assert calls(completion) == [("read_file", {"path": "a.py"}), ("read_file", {"path": "b/c.py"})]
    assert [c.id for c in completion.tool_calls] == ["demo_read_file_0", "demo_read_file_1"]


@pytest.mark.parametrize("tool", ["read_file", "list_files", "search_in_code"])
async def test_it_summarises_a_read_result_and_completes(tool: str) -> None:
    content = "x = 1\n" * 40
    messages = conversation(
        "coder", user("read x.py"), assistant_call("c1", tool, {}), tool_result("c1", content)
    )
    _, completion = await run(messages, agent="coder")

    assert completion.text.startswith(f"[demo] The tool returned {len(content)} characters: x = 1")
    assert completion.text.endswith("…")
    [(name, args)] = calls(completion)
    assert name == "attempt_completion"
    assert args["result"]
    assert completion.tool_calls[0].id == "demo_attempt_completion_1"


@pytest.mark.parametrize("tool", ["write_file", "create_directory", "execute_command"])
async def test_it_reports_done_after_a_change(tool: str) -> None:
    messages = conversation(
        "coder", user("do it"), assistant_call("c1", tool, {}), tool_result("c1", "ok: 3 lines")
    )
    _, completion = await run(messages, agent="coder")

    assert completion.text == "[demo] Done: ok: 3 lines"
    assert [name for name, _ in calls(completion)] == ["attempt_completion"]


async def test_it_only_answers_in_text_without_attempt_completion() -> None:
    messages = conversation(
        "coder", user("read x.py"), assistant_call("c1", "read_file", {}), tool_result("c1", "hi")
    )
    _, completion = await run(messages, tools=tool_specs(["read_file"]))

    assert completion.text == "[demo] The tool returned 2 characters: hi"
    assert completion.tool_calls == []


@pytest.mark.parametrize(
    "content",
    [
        "rejected by alice: not now",
        "The write_file call was rejected by alice: not now",
        "The write_file call was expired without a decision by system.",
        "Error: The ask agent may not use write_file. Allowed tools: read_file.",
        "Cancelled: the user sent a new message",
        '{"success": false, "output": "disk full"}',
        "The ask agent may not use write_file. Allowed tools: read_file.",
        'The architect agent may only write Markdown files (*.md); "a.py" is not allowed.',
        "Error: no such file",
        '{"error": "permission denied"}',
        "Command refused by the IDE",
    ],
)
async def test_it_apologises_for_a_failed_or_rejected_result(content: str) -> None:
    messages = conversation(
        "coder",
        user("write a.py"),
        assistant_call("c1", "write_file", {}),
        tool_result("c1", content),
    )
    _, completion = await run(messages, agent="coder")

    assert completion.text.startswith("[demo] Sorry, the write_file call did not go through")
    assert "I will not do that" in completion.text
    assert completion.tool_calls == []


async def test_it_apologises_when_a_switch_fails() -> None:
    messages = conversation(
        "coder",
        user("switch to debug"),
        assistant_call("c1", "switch_mode", {"mode": "debug"}),
        tool_result("c1", "Error: the session reached its limit of 50 agent switches."),
    )
    _, completion = await run(messages, agent="coder")

    assert completion.text.startswith("[demo] Sorry, the switch_mode call did not go through")
    assert completion.tool_calls == []


@pytest.mark.parametrize(
    "content",
    [
        "import logging\n\ndef f():\n    raise ValueError('error')\n",
        json.dumps({"content": "x = 1\nraise RuntimeError('not allowed')\n", "error": None}),
    ],
)
async def test_it_does_not_mistake_a_file_mentioning_errors_for_a_failure(content: str) -> None:
    messages = conversation(
        "ask", user("read f.py"), assistant_call("c1", "read_file", {}), tool_result("c1", content)
    )
    _, completion = await run(messages, agent="ask")

    assert completion.text.startswith("[demo] The tool returned")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("switch to debug and run pytest -q", [("execute_command", {"command": "pytest -q"})]),
        ("switch to debug", []),
    ],
)
async def test_it_continues_as_the_new_agent_after_a_switch(
    text: str, expected: list[tuple[str, dict[str, Any]]]
) -> None:
    messages = conversation(
        "debug",
        user(text),
        assistant_call("c1", "switch_mode", {"mode": "debug"}),
        {**tool_result("c1", "Switched to debug agent"), "name": "switch_mode"},
    )
    _, completion = await run(messages, agent="debug")

    assert calls(completion) == expected
    if not expected:
        assert "answering as the debug agent" in completion.text
    else:
        assert completion.tool_calls[0].id == "demo_execute_command_1"


@pytest.mark.parametrize(
    "text", ["read a.py", "hello   world\n\n  bye ", "  leading space", "both read a and b", ""]
)
async def test_it_streams_deltas_that_add_up_and_is_deterministic(text: str) -> None:
    messages = conversation("coder", user(text))
    deltas, completion = await run(messages, agent="coder")
    again_deltas, again = await run(messages, agent="coder")

    assert "".join(deltas) == completion.text
    assert (again_deltas, again) == (deltas, completion)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(deltas) + len(completion.tool_calls)
    chars = sum(len(m["content"]) for m in messages)
    assert completion.usage.prompt_tokens == chars // 4


async def test_it_drops_tool_calls_when_tool_choice_is_none() -> None:
    _, completion = await run(
        conversation("coder", user("read a.py")), agent="coder", tool_choice="none"
    )

    assert completion.tool_calls == []
    assert completion.finish_reason == "stop"


async def test_it_completes_through_the_base_class() -> None:
    messages = conversation("coder", user("read a.py"))
    completion = await DemoModel(token_delay=0.0).complete(
        messages=messages, tools=tool_specs(AGENTS["coder"].tools)
    )

    assert calls(completion) == [("read_file", {"path": "a.py"})]


async def test_it_reports_healthy() -> None:
    assert await DemoModel().check_health() == {
        "status": "ok",
        "detail": "built-in demo model (no LLM_BASE_URL configured)",
        "breaker": "closed",
    }
    assert DemoModel.label == "demo"
