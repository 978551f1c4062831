"""The built-in DEMO model: a deterministic, in-process stand-in for an LLM.

Used when no ``LLM_BASE_URL`` is configured, so the runtime works with nothing installed and
its flows (routing, tool calls, refusals, approvals, hand-offs) can be tried by typing trigger
phrases such as "read app.py" or "try write_file notes.py". Every reply is marked "[demo]".
No network, no randomness: the same messages always give the same answer.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from agents.llm import Completion, Done, LLMProvider, TextDelta, ToolCall, Usage
from agents.registry import AGENTS, SPECIALISTS
from agents.routing import CLASSIFIER_PROMPT, route_by_keywords
from agents.tools import TOOL_NAMES

Call = tuple[str, dict[str, Any]]

_I = re.IGNORECASE
# Triggers looked for in the last user message (see _respond for which one wins).
# "rest" is the remainder of the line, where the tool's arguments are looked for.
_TRY = re.compile(r"\btry\s+(?:to\s+use\s+|using\s+)?(?P<tool>\w+)(?P<rest>.*)", _I)
_BOTH = re.compile(r"\bboth\s+read\s+(?P<a>\S+)\s+and\s+(?P<b>\S+)", _I)
_TRIGGERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(?:switch\s+to|hand\s+off\s+to|ask\s+the)\b(?P<rest>.*)", _I), "switch_mode"),
    (re.compile(r"\b(?:read|show|open)\b(?P<rest>.*)", _I), "read_file"),
    (re.compile(r"\b(?:list\s+(?:all\s+|the\s+)?files|ls)\b(?P<rest>.*)", _I), "list_files"),
    (re.compile(r"\b(?:write|create\s+(?:a\s+)?file)\b(?P<rest>.*)", _I), "write_file"),
    (re.compile(r"\b(?:run|execute)\b(?P<rest>.*)", _I), "execute_command"),
    (re.compile(r"\bmkdir\b(?P<rest>.*)", _I), "create_directory"),
    (re.compile(r"\bsearch\s+for\b(?P<rest>.*)", _I), "search_in_code"),
    (re.compile(r"\b(?:done|finish|complete)\b(?P<rest>.*)", _I), "attempt_completion"),
    (re.compile(r"\b(?:question|unclear)\b(?P<rest>.*)", _I), "ask_followup_question"),
)
# A token "looks like a path" when it holds a dot or a slash (after stripping punctuation).
_PATH_TOKEN = re.compile(r"^[\w~.\-/\\]*[./\\][\w~.\-/\\]*$")
# Quotes and punctuation around a path; a leading dot stays (".env", "../x").
_EDGES = re.compile(r"^[\"'`(\[<]+|[\"'`)\]>,;:!?.]+$")
_WEAK = ("attempt_completion", "ask_followup_question")
_TARGET = re.compile(r"^\s*(?:the\s+)?(?P<agent>coder|architect|debug|ask)\b", _I)
_AGENT_LINE = re.compile(r"\byou are (?:the|an?) (\w+) agent\b", _I)
# A failed or refused tool result: runtime refusals ("Error: The ask agent may not use ..."),
# rejections ("The write_file call was rejected by alice") and IDE errors. Only the first line
# is looked at, so reading a file that merely mentions errors is no failure.
_FAILURE_START = re.compile(r"^\W*(?:failed|cancell?ed|unknown tool|invalid arguments)\b", _I)
_FAILURE_WORDS = re.compile(
    r"\b(?:errors?|rejected|refused|denied|not allowed|may not use|expired without)\b", _I
)
_TOKEN = re.compile(r"\s+|\S+\s*")  # word-sized deltas that concatenate back to the text

READ_TOOLS = ("read_file", "list_files", "search_in_code")
CHANGE_TOOLS = ("write_file", "create_directory", "execute_command")
DEMO_CONTENT = "# Written by the demo model\n"
SNIPPET_CHARS = 80
_FIXED_ARGUMENTS = {
    "attempt_completion": {"result": "[demo] Task complete."},
    "ask_followup_question": {"question": "[demo] Which file do you mean?"},
}
_TRY_DEFAULTS = {
    "read_file": "README.md",
    "write_file": "notes.md",
    "create_directory": "demo",
    "execute_command": "echo hello",
    "search_in_code": "TODO",
    "switch_mode": "coder",
}


class DemoModel(LLMProvider):
    label = "demo"

    def __init__(self, *, token_delay: float = 0.0) -> None:
        self.token_delay = token_delay

    async def stream_chat(
        self,
        *,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> AsyncIterator[TextDelta | Done]:
        allowed = {spec["function"]["name"] for spec in tools or ()}
        text, calls = _reply(messages, allowed, response_format)
        if tool_choice == "none":
            calls = []
        deltas = _TOKEN.findall(text)
        for delta in deltas:
            await asyncio.sleep(self.token_delay)  # yields to the loop even when 0
            yield TextDelta(text=delta)
        first = sum(
            len(m.get("tool_calls") or ()) for m in messages if m.get("role") == "assistant"
        )
        tool_calls = [
            ToolCall(id=f"demo_{name}_{first + i}", name=name, arguments=json.dumps(args))
            for i, (name, args) in enumerate(calls)
        ]
        usage = Usage(
            prompt_tokens=_characters(messages) // 4,
            completion_tokens=len(deltas) + len(tool_calls),
        )
        yield Done(
            completion=Completion(
                text=text,
                tool_calls=tool_calls,
                usage=usage,
                finish_reason="tool_calls" if tool_calls else "stop",
            )
        )

    async def check_health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "detail": "built-in demo model (no LLM_BASE_URL configured)",
            "breaker": "closed",
        }


def _reply(
    messages: list[dict[str, Any]], allowed: set[str], response_format: dict[str, Any] | None
) -> tuple[str, list[Call]]:
    system = next((_text(m) for m in messages if m.get("role") == "system"), "")
    user = next((_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
    if system.startswith(CLASSIFIER_PROMPT) or (response_format or {}).get("type") == "json_object":
        route = route_by_keywords(user)
        answer = {"agent": route.agent, "confidence": route.confidence}
        return json.dumps({**answer, "reasoning": "demo model: keyword routing"}), []
    agent = _agent_name(system)
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        tool = last.get("name") or _tool_name(messages, last.get("tool_call_id"))
        if tool == "switch_mode" and not _failed(_text(last)):
            # After a hand-off, act on the request as the new agent, without handing off again.
            return _respond(user, agent, allowed, may_switch=False)
        return _after_tool(tool or "the tool", _text(last), allowed)
    return _respond(user, agent, allowed, may_switch=True)


def _respond(
    user: str, agent: str, allowed: set[str], *, may_switch: bool
) -> tuple[str, list[Call]]:
    if match := _TRY.search(user):
        tool = match.group("tool").lower()
        if tool in TOOL_NAMES:  # forced even when not allowed, to show the runtime refusing it
            args = _arguments(tool, match.group("rest"), defaults=True)
            return _announce([(tool, args or {})])
    if match := _BOTH.search(user):
        calls = [("read_file", {"path": _clean(match.group(k))}) for k in ("a", "b")]
        if "read_file" in allowed:
            return _announce(calls)
        return _cannot(agent, "read_file", allowed), []
    # The trigger that appears first in the text wins ("run ls -la" runs, it does not list);
    # "done" and "question" are weak words, so they only count when no action matched.
    found: list[tuple[bool, int, int, str, dict[str, Any]]] = []
    for order, (regex, tool) in enumerate(_TRIGGERS):
        match = regex.search(user)
        if match is None or (tool == "switch_mode" and not may_switch):
            continue
        args = _arguments(tool, match.group("rest"), defaults=False)
        if args is not None:
            found.append((tool in _WEAK, match.start(), order, tool, args))
    if found:
        *_, tool, args = min(found)
        if tool not in allowed:
            return _cannot(agent, tool, allowed), []
        if tool == "switch_mode" and args["mode"] == agent:
            return f"[demo] I am already the {agent} agent.", []
        return _announce([(tool, args)])
    said = user.strip() or "nothing"
    if len(said) > 500:
        said = said[:500] + "…"
    return (
        f"[demo] I am the demo model answering as the {agent} agent. You said: {said} "
        "Configure LLM_BASE_URL to use a real model.",
        [],
    )


def _arguments(tool: str, rest: str, *, defaults: bool) -> dict[str, Any] | None:
    """The call's arguments found in ``rest``; None when they are missing (so no match).

    With ``defaults`` (the "try" phrase) missing arguments get plausible values instead.
    """
    fallback = _TRY_DEFAULTS.get(tool, "") if defaults else ""
    if tool in _FIXED_ARGUMENTS:
        return dict(_FIXED_ARGUMENTS[tool])
    if tool == "switch_mode":
        match = _TARGET.search(rest)
        mode = match.group("agent").lower() if match else fallback
        return {"mode": mode, "reason": f"the user asked for the {mode} agent"} if mode else None
    if tool in ("execute_command", "search_in_code"):
        line = rest.strip().lstrip(":").strip().rstrip("?!.").strip().strip("\"'`") or fallback
        return {"command" if tool == "execute_command" else "query": line} if line else None
    path = _first_path(rest)
    if tool == "list_files":
        path = path or "."
    elif tool == "create_directory" and not path and rest.split():
        path = _clean(rest.split()[0])  # directory names rarely hold a dot
    if not (path := path or fallback):
        return None
    return {"path": path, "content": DEMO_CONTENT} if tool == "write_file" else {"path": path}


def _after_tool(tool: str, content: str, allowed: set[str]) -> tuple[str, list[Call]]:
    if _failed(content):
        return (
            f"[demo] Sorry, the {tool} call did not go through, so I will not do that. "
            "I can read the relevant files instead, or you can tell me what to try next.",
            [],
        )
    snippet = " ".join(content.split())
    if len(snippet) > SNIPPET_CHARS:
        snippet = snippet[:SNIPPET_CHARS] + "…"
    if tool in READ_TOOLS:
        text = f"[demo] The tool returned {len(content)} characters: {snippet}"
        result = f"[demo] Used {tool} and got {len(content)} characters back."
    elif tool in CHANGE_TOOLS:
        text = f"[demo] Done: {snippet}"
        result = f"[demo] {tool} finished."
    else:
        return f"[demo] Noted the {tool} result: {snippet}", []
    finish = [("attempt_completion", {"result": result})]
    return text, finish if "attempt_completion" in allowed else []


def _failed(content: str) -> bool:
    try:
        data = json.loads(content)
    except ValueError:
        data = None
    if isinstance(data, dict):  # a structured IDE result says so itself
        status = data.get("status")
        return bool(data.get("error")) or data.get("success") is False or status == "error"
    first_line = content.strip().split("\n", 1)[0]
    return bool(_FAILURE_START.search(first_line) or _FAILURE_WORDS.search(first_line))


def _announce(calls: list[Call]) -> tuple[str, list[Call]]:
    names = " and ".join(dict.fromkeys(name for name, _ in calls))
    return f"[demo] I'll use {names} for that.", calls


def _cannot(agent: str, tool: str, allowed: set[str]) -> str:
    text = f"[demo] The {agent} agent cannot use {tool}, so I will not do that."
    others = [t for t in SPECIALISTS if t != agent and tool in AGENTS[t].tools]
    if others and tool != "switch_mode" and "switch_mode" in allowed:
        text += f' Say "switch to {others[0]}" to hand this to an agent that can.'
    return text


def _agent_name(system: str) -> str:
    # Longest prompt first, so a prompt that starts with another's text cannot shadow it.
    for spec in sorted(AGENTS.values(), key=lambda s: -len(s.prompt)):
        if system.startswith(spec.prompt):
            return spec.type
    match = _AGENT_LINE.search(system.split("\n", 1)[0])
    return match.group(1).lower() if match else "assistant"


def _tool_name(messages: list[dict[str, Any]], call_id: str | None) -> str | None:
    for message in reversed(messages):
        for call in message.get("tool_calls") or ():
            if call.get("id") == call_id:
                name: str | None = call.get("function", {}).get("name")
                return name
    return None


def _first_path(text: str) -> str | None:
    for word in text.split():
        token = _clean(word)
        if token and _PATH_TOKEN.match(token) and token.strip("."):
            return token
    return None


def _clean(word: str) -> str:
    return _EDGES.sub("", word)


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):  # OpenAI content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _characters(messages: list[dict[str, Any]]) -> int:
    total = 0
    for message in messages:
        total += len(_text(message))
        for call in message.get("tool_calls") or ():
            total += len(str(call.get("function", {}).get("arguments", "")))
    return total
