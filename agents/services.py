"""Agent context workflows: switching the agent a session talks to."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agent_runtime.errors import ApplicationError, Conflict, NotFound
from agents.chunks import CONFIDENCE_LEVELS, confidence_level, token_chunk, tool_call_chunk
from agents.llm import Completion
from agents.models import AgentContext, AgentSwitch, ToolCall
from agents.policy import InvalidArguments, get_policy, parse_arguments
from agents.registry import UnknownAgent, default_agent, get_agent
from agents.tools import RUNTIME_TOOLS
from approvals.models import Approval
from approvals.services import approval_decide
from sessions import locks, rows
from sessions.models import AgentSession, AuditEvent, LLMRequest, Message
from sessions.selectors import llm_messages
from sessions.services import audit_record, message_append

REASON_MAX_CHARS = 2000


def agent_switch(
    *,
    session: AgentSession | str,
    to_agent: str,
    reason: str = "",
    confidence: str | None = None,
    score: float | None = None,
) -> tuple[AgentContext, AgentSwitch | None]:
    """Switch the session's agent; returns the context and the switch row (None: no change).

    ``confidence`` is the level clients read; without one it follows from the router's
    ``score``. Refuses unknown agents (400) and switches past MAX_AGENT_SWITCHES (409). The
    context row is locked (select_for_update) so concurrent switches count correctly against
    the cap.
    """
    try:
        get_agent(to_agent)
    except UnknownAgent as exc:
        raise ApplicationError(str(exc)) from None
    if score is not None and not 0.0 <= score <= 1.0:
        raise ApplicationError("confidence must be between 0 and 1.")
    if confidence is None:
        confidence = confidence_level(score)
    elif confidence not in CONFIDENCE_LEVELS:
        raise ApplicationError(f"confidence must be one of {', '.join(CONFIDENCE_LEVELS)}.")
    reason = (reason or "")[:REASON_MAX_CHARS]
    session_id = session if isinstance(session, str) else session.pk
    with transaction.atomic():
        locks.fence_check(session_id)
        context = AgentContext.objects.select_for_update().get(session_id=session_id)
        if context.current_agent == to_agent:
            return context, None
        if context.switch_count >= settings.MAX_AGENT_SWITCHES:
            raise Conflict(
                f"this session has reached the limit of {settings.MAX_AGENT_SWITCHES} agent "
                "switches; start a new session."
            )
        now = timezone.now()
        switch = rows.insert(
            AgentSwitch,
            context=context,
            from_agent=context.current_agent,
            to_agent=to_agent,
            reason=reason,
            confidence=confidence or "",
            score=score,
            switched_at=now,
        )
        context.current_agent = to_agent
        context.switch_count += 1
        context.last_switch_at = now
        rows.update(
            _SWITCHED,
            [to_agent, context.switch_count, rows.db_value(AgentContext, "last_switch_at", now),
             context.pk],
        )  # fmt: skip
        audit_record(
            event_type=AuditEvent.Type.AGENT_SWITCHED,
            session_id=session_id,
            agent=to_agent,
            from_agent=switch.from_agent,
            to_agent=to_agent,
            reason=reason,
            confidence=confidence,
            score=score,
        )
    return context, switch


# A session's first message usually switches agents: its statements are built once.
_SWITCHED = (
    'UPDATE "agents_agentcontext" SET "current_agent" = %s, "switch_count" = %s,'
    ' "last_switch_at" = %s WHERE "id" = %s'
)


# --- Turn steps: the database side of the agent loop (agents.engine drives them) -------------


@dataclass(frozen=True)
class Emit:
    """What a queue step wants sent: a tool call for the IDE, or an agent switch."""

    chunk: dict[str, Any]
    ends_turn: bool


def _tool_message(*, session_id: str, call: ToolCall, content: str) -> None:
    message_append(
        session=session_id,
        role=Message.Role.TOOL,
        content=content,
        tool_call_id=call.call_id,
        name=call.tool_name,
        agent=call.agent,
    )


def tool_result_content(result: Any, error: str | None) -> str:
    """What the model reads as a tool's result."""
    if error:
        return f"Error: {error}" + ("" if result is None else f"\n{_as_text(result)}")
    return _as_text(result)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def open_calls_cancel(*, session_id: str, why: str) -> int:
    """Close every queued or outstanding call with a result, so history stays valid.

    Used when the user speaks while calls are still open (and when a session is deleted): a
    strict provider rejects a history with an assistant tool call and no matching tool result.
    A call waiting for a human is cancelled through the decision service, like any decision.
    """
    # Every user message asks; nearly always there is none (one statement built once).
    if not rows.select(_ANY_OPEN_CALL, [session_id, *_OPEN_STATES]):
        return 0
    with transaction.atomic(savepoint=False):
        calls = list(
            ToolCall.objects.select_for_update()
            .for_session(session_id)
            .filter(status__in=_OPEN_STATES)
            .order_by("id")
        )
        for call in calls:
            if call.status == ToolCall.Status.AWAITING_APPROVAL:
                approval_decide(
                    session_id=session_id,
                    call_id=call.call_id,
                    decision="cancel",
                    decided_by_kind=Approval.DeciderKind.SYSTEM,
                    decided_by="system",
                    feedback=why,
                    resume=False,  # there is nothing to continue: the call is superseded
                )
                continue
            _tool_message(session_id=session_id, call=call, content=f"Cancelled: {why}")
            call.settle(ToolCall.Status.CANCELLED)
    return len(calls)


_OPEN_STATES = (ToolCall.Status.QUEUED, *ToolCall.OUTSTANDING)
_STATE_PLACEHOLDERS = ", ".join(["%s"] * len(_OPEN_STATES))
# Placeholders only: the states are parameters.
_ANY_OPEN_CALL = (
    'SELECT 1 FROM "agents_toolcall" WHERE "session_id" = %s'  # noqa: S608
    f' AND "status" IN ({_STATE_PLACEHOLDERS}) LIMIT 1'
)


def user_message_accept(*, session_id: str, content: str) -> None:
    open_calls_cancel(session_id=session_id, why="the user sent a new message instead.")
    if content:
        message_append(session=session_id, role=Message.Role.USER, content=content)
    audit_record(
        event_type=AuditEvent.Type.MESSAGE_RECEIVED, session_id=session_id, chars=len(content)
    )


def outstanding_call(*, session_id: str, call_id: str) -> ToolCall:
    """The call a tool_result answers: 404 if unknown, 409 if it is not waiting for one."""
    call = ToolCall.objects.for_session(session_id).filter(call_id=call_id).first()
    if call is None:
        raise NotFound(f"no tool call {call_id!r} in this session")
    if call.status not in ToolCall.OUTSTANDING:
        raise Conflict(f"tool call {call_id!r} is not waiting for a result (it is {call.status}).")
    return call


def tool_result_accept(
    *,
    session_id: str,
    call_id: str,
    result: Any,
    error: str | None,
    decided_by_kind: str = "ide",
    decided_by: str = "ide",
    user: Any = None,
) -> ToolCall:
    """Record the IDE's result. For a call still awaiting approval, the result is the IDE's
    own decision (compat): no error means approved and executed, an error means rejected.

    The model is told the truth: after a human decision its tool result starts with what was
    decided, by whom and why (and for an edit, the arguments that really ran)."""
    with transaction.atomic():
        call = outstanding_call(session_id=session_id, call_id=call_id)
        call = ToolCall.objects.select_for_update().get(pk=call.pk)
        if call.status not in ToolCall.OUTSTANDING:  # lost a race with another result
            raise Conflict(f"tool call {call_id!r} is not waiting for a result any more.")
        if call.status == ToolCall.Status.AWAITING_APPROVAL:
            approval_decide(
                session_id=session_id,
                call_id=call_id,
                decision="reject" if error else "approve",
                decided_by_kind=decided_by_kind,
                decided_by=decided_by,
                user=user,
                feedback=error or "",
                resume=False,  # this turn goes on by itself
            )
            call.refresh_from_db()
        if call.status == ToolCall.Status.REJECTED:
            return call  # the decision wrote the call's result
        content = tool_result_content(result, error)
        if call.requires_approval:
            decided = Approval.objects.get(session_id=session_id, call_id=call_id)
            content = (
                f"{decided.outcome_text()}\n\n{content}" if content else decided.outcome_text()
            )
        _tool_message(session_id=session_id, call=call, content=content)
        call.settle(
            ToolCall.Status.FAILED if error else ToolCall.Status.COMPLETED, error=error or ""
        )
        audit_record(
            event_type=AuditEvent.Type.TOOL_FAILED if error else AuditEvent.Type.TOOL_COMPLETED,
            session_id=session_id,
            agent=call.agent,
            call_id=call_id,
            tool_name=call.tool_name,
            error=error,
        )
    return call


def turn_llm_input(*, session_id: str) -> tuple[str, list[dict[str, Any]]]:
    """The current agent and the history to send the model."""
    found = rows.select(_CURRENT_AGENT, [session_id])
    if not found:
        raise AgentContext.DoesNotExist(f"no agent context for session {session_id!r}")
    return found[0][0], llm_messages(session_id=session_id)


_CURRENT_AGENT = 'SELECT "current_agent" FROM "agents_agentcontext" WHERE "session_id" = %s'


def _history_arguments(raw: str) -> str:
    """Arguments as stored in history: valid JSON objects only, or strict providers refuse."""
    try:
        return raw if isinstance(parse_arguments(raw), dict) and raw.strip() else "{}"
    except InvalidArguments:
        return "{}"


def completion_record(
    *,
    session_id: str,
    agent: str,
    completion: Completion | None,
    partial_text: str,
    llm: dict[str, Any],
) -> list[ToolCall]:
    """Store one model reply (or the failure) and queue its tool calls, in one transaction."""
    llm = dict(llm)
    error_type = llm.pop("error_type", "") or "LLMError"
    with transaction.atomic():
        rows.insert(LLMRequest, session_id=session_id, agent=agent, **llm)
        audit_record(
            event_type=AuditEvent.Type.AGENT_PROCESSED,
            session_id=session_id,
            agent=agent,
            duration_ms=llm["duration_ms"],
            success=llm["success"],
        )
        if not llm["success"]:
            audit_record(
                event_type=AuditEvent.Type.ERROR,
                session_id=session_id,
                agent=agent,
                error_type=error_type,
                error=llm["error"],
            )
        if completion is None:
            if partial_text:  # the user saw it stream; keep it, without any tool calls
                message_append(
                    session=session_id,
                    role=Message.Role.ASSISTANT,
                    content=partial_text,
                    agent=agent,
                    finish_reason=llm.get("finish_reason", ""),
                )
            return []
        asked = [c.id for c in completion.tool_calls]
        taken = set(
            ToolCall.objects.for_session(session_id)
            .filter(call_id__in=asked)
            .values_list("call_id", flat=True)
            if asked
            else ()
        )
        calls: list[ToolCall] = []
        wire: list[dict[str, Any]] = []
        for tc in completion.tool_calls:
            call_id = tc.id if tc.id and tc.id not in taken and len(tc.id) <= 128 else ""
            call_id = call_id or f"call_{uuid.uuid4().hex[:24]}"
            taken.add(call_id)
            arguments = _history_arguments(tc.arguments)
            wire.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": tc.name, "arguments": arguments},
                }
            )
            calls.append(
                ToolCall(
                    session_id=session_id,
                    call_id=call_id,
                    tool_name=tc.name[:64],
                    agent=agent,
                    # The raw text, so the queue step can tell the model what was wrong with it.
                    arguments={"__raw__": tc.arguments}
                    if arguments == "{}"
                    else json.loads(arguments),
                )
            )
        usage = completion.usage
        message_append(
            session=session_id,
            role=Message.Role.ASSISTANT,
            content=completion.text,
            tool_calls=wire or None,
            agent=agent,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            usage_estimated=bool(usage and usage.estimated),
            finish_reason=completion.finish_reason or "",
        )
        if calls:
            ToolCall.objects.bulk_create(calls)
        for call in calls:
            audit_record(
                event_type=AuditEvent.Type.TOOL_REQUESTED,
                session_id=session_id,
                agent=agent,
                call_id=call.call_id,
                tool_name=call.tool_name,
            )
    return calls


def _refuse(*, session_id: str, call: ToolCall, reason: str) -> None:
    _tool_message(session_id=session_id, call=call, content=f"Error: {reason}")
    call.settle(ToolCall.Status.REFUSED, error=reason)
    audit_record(
        event_type=AuditEvent.Type.TOOL_REFUSED,
        session_id=session_id,
        agent=call.agent,
        call_id=call.call_id,
        tool_name=call.tool_name,
        reason=reason,
    )


def _switch_mode(*, session_id: str, call: ToolCall, arguments: dict[str, Any]) -> Emit | None:
    """switch_mode runs here, never in the IDE: switch, then tell the model it happened."""
    mode = arguments.get("mode")
    reason = str(arguments.get("reason") or "hand-off requested by the agent")
    try:
        _, switch = agent_switch(session=session_id, to_agent=str(mode), reason=reason)
    except ApplicationError as exc:
        _refuse(session_id=session_id, call=call, reason=exc.detail)
        return None
    _tool_message(
        session_id=session_id,
        call=call,
        content=f"Switched to the {mode} agent. Continue the task as the {mode} agent.",
    )
    call.settle(ToolCall.Status.HANDLED)
    if switch is None:
        return None
    return Emit(chunk=switch.to_chunk(is_final=False), ends_turn=False)


def tool_queue_step(*, session_id: str) -> Emit | None | bool:
    """Take the next queued call and decide its fate under the agent's policy.

    Returns an Emit to send (a tool call ends the turn; a switch does not), True when the
    call was settled inside the runtime (refused), or None when the queue is empty.
    """
    with transaction.atomic():
        call = ToolCall.objects.select_for_update().for_session(session_id).queued().first()
        if call is None:
            return None
        locks.fence_check(session_id)  # nothing goes out from a turn that lost its lease
        if "__raw__" in call.arguments:
            try:
                arguments = parse_arguments(call.arguments["__raw__"])
            except InvalidArguments as exc:
                _refuse(session_id=session_id, call=call, reason=f"{exc} Send a JSON object.")
                return True
        else:
            arguments = call.arguments
        try:
            spec = get_agent(call.agent)
        except UnknownAgent as exc:
            _refuse(session_id=session_id, call=call, reason=str(exc))
            return True
        policy = get_policy()
        refusal = policy.check(agent=spec, tool_name=call.tool_name, arguments=arguments)
        if refusal is not None:
            _refuse(session_id=session_id, call=call, reason=refusal.reason)
            return True
        if call.tool_name in RUNTIME_TOOLS:
            return _switch_mode(session_id=session_id, call=call, arguments=arguments) or True
        # Optional arguments the model sent as null are simply absent for the IDE.
        arguments = {k: v for k, v in arguments.items() if v is not None}
        needs_approval = policy.requires_approval(
            agent=spec, tool_name=call.tool_name, arguments=arguments
        )
        call.send(arguments=arguments, needs_approval=needs_approval)
        if needs_approval:
            Approval.objects.create(
                session_id=session_id,
                call_id=call.call_id,
                tool_name=call.tool_name,
                arguments=arguments,
                agent=call.agent,
                reason=f"{call.tool_name} requires human approval by policy",
            )
            audit_record(
                event_type=AuditEvent.Type.APPROVAL_REQUESTED,
                session_id=session_id,
                agent=call.agent,
                call_id=call.call_id,
                tool_name=call.tool_name,
            )
    return Emit(chunk=call_chunk(call), ends_turn=True)


def call_chunk(call: ToolCall, approval: Approval | None = None) -> dict[str, Any]:
    """The tool_call chunk; once a human decided it, its metadata says who and why."""
    chunk = tool_call_chunk(
        call_id=call.call_id,
        tool_name=call.tool_name,
        arguments=call.arguments,
        requires_approval=call.status == ToolCall.Status.AWAITING_APPROVAL,
    )
    if approval is not None and not approval.is_pending:
        chunk["metadata"] = approval.to_metadata()
    return chunk


def classification_record(*, session_id: str, llm: dict[str, Any]) -> None:
    model_call_record(session_id=session_id, agent="orchestrator", llm=llm)


def model_call_record(*, session_id: str, agent: str, llm: dict[str, Any]) -> None:
    """A model call that writes no message (routing, a summary of the history)."""
    LLMRequest.objects.create(session_id=session_id, agent=agent, **llm)


@dataclass(frozen=True)
class Resume:
    """What a decided call still needs: a chunk to send (the released call, or what was
    decided), and whether the model then takes its next step."""

    chunk: dict[str, Any] | None
    advance: bool


def resume_step(*, session_id: str, call_id: str) -> Resume | None:
    """After a decision made outside a turn. None: the session moved on, nothing to do."""
    call = ToolCall.objects.get(session_id=session_id, call_id=call_id)
    approval = Approval.objects.filter(session_id=session_id, call_id=call_id).first()
    if call.status == ToolCall.Status.EMITTED:
        return Resume(chunk=call_chunk(call, approval), advance=False)
    if call.status != ToolCall.Status.REJECTED:
        return None
    last = Message.objects.filter(session_id=session_id).order_by("-seq").first()
    moved_on = last is None or last.role != Message.Role.TOOL
    if moved_on or ToolCall.objects.for_session(session_id).outstanding().exists():
        return None
    told = None
    if approval is not None:  # the IDE user learns who rejected it and why, in its own frame
        told = token_chunk(approval.outcome_text() + "\n\n")
        told["metadata"] = approval.to_metadata()
    return Resume(chunk=told, advance=True)


def outstanding_chunks(*, session_id: str) -> list[dict[str, Any]]:
    """The tool_call chunks still waiting on the IDE or a human, oldest first: what a client
    that (re)connects asks for with ``?replay=outstanding`` (a call approved while no socket
    was connected would otherwise reach nobody)."""
    calls = list(ToolCall.objects.for_session(session_id).outstanding().order_by("id"))
    decided = {
        a.call_id: a
        for a in Approval.objects.filter(
            session_id=session_id, call_id__in=[c.call_id for c in calls]
        )
    }
    return [call_chunk(call, decided.get(call.call_id)) for call in calls]


# --- What a session needs from this app (receivers of sessions.signals) ----------------------


def on_session_created(sender: Any, *, session: AgentSession, now: Any, **kwargs: Any) -> None:
    session.agent_context = AgentContext.objects.create(
        session=session, current_agent=default_agent(), created_at=now
    )


def on_session_deleting(sender: Any, *, session_id: str, **kwargs: Any) -> None:
    open_calls_cancel(session_id=session_id, why="the session was deleted.")
