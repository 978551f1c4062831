"""The agent loop: route, call the model, stream its text, send its tool calls out one by one.

A ``Turn`` runs on the event loop; every database step is a sync service in agents.services
reached through ``database_sync_to_async``. No transaction is open while the model talks.
The turn's chunks go to ``emit``; every turn ends with exactly one ``is_final`` chunk.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from agent_runtime.errors import ApplicationError
from agents import services, tokens
from agents.chunks import error_chunk, token_chunk
from agents.context import CHARS_PER_TOKEN, Fitted, fit_request, transcript_of, with_summary
from agents.llm import (
    Completion,
    Done,
    LLMContextOverflow,
    LLMError,
    LLMProvider,
    LLMStreamBroken,
    Usage,
    get_provider,
    log_session,
)
from agents.registry import get_agent
from agents.routing import CLASSIFIER_PROMPT, Route, parse_classification, route_by_keywords
from agents.tools import tool_specs
from sessions.db import durable

logger = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], Awaitable[None]]

# The answer's reserve when neither LLM_ANSWER_RESERVE_TOKENS nor LLM_MAX_TOKENS is set: a
# quarter of the window, at most this.
DEFAULT_RESERVE_TOKENS = 4096

SUMMARY_PROMPT = (
    "Summarise the conversation below between a user and a coding assistant in at most "
    "{words} words: what the user wants, decisions made, files and facts found, and what is "
    "still open. Write only the summary."
)
SUMMARY_CACHE_SECONDS = 7 * 24 * 3600

EMPTY_REPLY = "The model returned an empty reply; send another message to continue."
# Appended to the last chunk of a reply the provider cut at its length limit, so the user
# reads it in the same bubble (the reply itself is stored without it).
LENGTH_NOTICE = (
    "\n\n[The reply was cut off here: the model reached its length limit for one answer. "
    "Ask it to continue, or raise LLM_MAX_TOKENS.]"
)


class Reply:
    """One model reply's text on its way to the client (PROTOCOL §3.2, one frame, one bubble).

    The IDE draws every frame as a bubble of its own, so the chunk that ends a response must
    carry text, never "". In ``token`` mode each delta goes out the moment it comes, all but
    its last character, which waits for the next delta or the end of the reply: the first
    token is not delayed (PROTOCOL §3.2: at once), and the final chunk always has text. In
    ``message`` mode (STREAM_MODE) the whole text is held and sent as one chunk.
    """

    def __init__(self, emit: Emit, *, whole: bool) -> None:
        self.emit = emit
        self.whole = whole
        self.held = ""  # token mode: the last character so far; message mode: all the text
        self.parts: list[str] = []  # message mode

    async def add(self, text: str) -> None:
        if self.whole:
            self.parts.append(text)
            return
        pending = self.held + text
        if len(pending) > 1:
            self.held = pending[-1]
            await self.emit(token_chunk(pending[:-1]))
        else:
            self.held = pending

    async def flush(
        self, *, is_final: bool = False, notice: str = "", metadata: dict[str, Any] | None = None
    ) -> bool:
        """Send what is held back (and ``notice`` after it); False if there was nothing."""
        text = self.held + "".join(self.parts)
        self.held, self.parts = "", []
        if not text:
            return False
        await self.emit(token_chunk(text + notice, is_final=is_final, metadata=metadata))
        return True


class Turn:
    def __init__(self, *, session_id: str, emit: Emit, provider: LLMProvider | None = None):
        self.session_id = session_id
        self.emit = emit
        self.provider = provider or get_provider()
        self.rounds = 0
        # Set by whoever cancels the turn for a reason the client should read.
        self.stopped_because: str | None = None

    # --- entry points, one per kind of work; the caller has already stored the input -------

    async def guarded(self, work: Awaitable[None]) -> None:
        """Run ``work``; whatever goes wrong, the client gets one final ``error`` chunk."""
        log_session.set(self.session_id)  # this task's model calls log under the session
        try:
            await work
        except ApplicationError as exc:
            await self.emit(error_chunk(exc.detail, status=exc.status, code=exc.code))
        except asyncio.CancelledError:
            await self.emit(error_chunk(self.stopped_because or "The turn was cancelled."))
            raise
        except Exception:
            logger.exception("turn failed for session %s", self.session_id)
            await self.emit(error_chunk("The runtime failed while running this turn."))

    async def user_message(
        self,
        *,
        content: str,
        agent: str,
        history: list[dict[str, Any]],
        switched: dict[str, Any] | None,
    ) -> None:
        """The user's message is stored (and ``history`` loaded with it); route it if needed,
        then let the agent answer."""
        if switched is not None:
            await self.emit(switched)
        if agent == "orchestrator":
            route = await self.classify(content or _last_user_text(history))
            await self.switch(route.agent, reason=route.reasoning, score=route.confidence)
            agent = route.agent
        await self.agent_loop(preloaded=(agent, history))

    async def advance(self) -> None:
        """Send the next queued call; when none is left, the model takes the next step."""
        if not await self.drain_queue():
            await self.agent_loop()

    async def resume(self, *, call_id: str) -> None:
        """After a human decision: an approved call goes to the IDE; a rejection moves on.

        Decisions from the admin, REST or expiry are made outside the session's lease, so the
        session may have moved on before this runs; then there is nothing left to do.
        """
        step = await durable(
            "look up the decided call",
            services.resume_step,
            session_id=self.session_id,
            call_id=call_id,
        )
        if step is None:
            return
        if step.chunk is not None:
            await self.emit(step.chunk)
        if step.advance:
            await self.advance()

    # --- the loop ---------------------------------------------------------------------------

    async def switch(self, agent: str, *, reason: str, score: float | None) -> None:
        _, switch = await durable(
            "switch the agent",
            services.agent_switch,
            session=self.session_id,
            to_agent=agent,
            reason=reason,
            score=score,
        )
        if switch is not None:
            await self.emit(switch.to_chunk(is_final=False))

    async def agent_loop(self, preloaded: tuple[str, list[dict[str, Any]]] | None = None) -> None:
        while True:
            if self.rounds >= settings.MAX_LLM_ROUNDS_PER_REQUEST:
                await self.emit(
                    error_chunk(
                        f"Stopped after {self.rounds} model calls in one request without a "
                        "result for the IDE; send another message to continue."
                    )
                )
                return
            self.rounds += 1
            reply = Reply(self.emit, whole=settings.STREAM_MODE == "message")
            try:
                completion = await self.call_model(preloaded, reply=reply)
            except BaseException:
                # However the turn stops (cancelled, the database gone), the client first
                # gets all of the text it was streamed, then the error.
                await reply.flush()
                raise
            preloaded = None
            if completion is None:
                return
            if not completion.tool_calls:
                # The reply ends the response: its last text is the final chunk. A reply
                # without any text cannot be one, and ending on an empty bubble would show
                # nothing: the user is told the model said nothing.
                cut = completion.finish_reason == "length"
                if not await reply.flush(
                    is_final=True,
                    notice=LENGTH_NOTICE if cut else "",
                    metadata={"finish_reason": "length", "truncated": True} if cut else None,
                ):
                    await self.emit(error_chunk(EMPTY_REPLY, status=502, code="empty_reply"))
                return
            await reply.flush()  # the text before the calls; a tool_call chunk ends the turn
            if await self.drain_queue():
                return

    async def drain_queue(self) -> bool:
        """Settle queued calls in order; True once one has gone out (which ends the turn)."""
        while True:
            step = await durable(
                "settle the next tool call", services.tool_queue_step, session_id=self.session_id
            )
            if step is None:
                return False
            if isinstance(step, services.Emit):
                await self.emit(step.chunk)
                if step.ends_turn:
                    return True

    async def call_model(
        self, preloaded: tuple[str, list[dict[str, Any]]] | None, *, reply: Reply
    ) -> Completion | None:
        """Ask the model; its text goes to ``reply``, which the caller ends (the last of it
        is held back). A failure is stored, and sent after what was held back."""
        if preloaded is None:
            preloaded = await durable(
                "load the history", services.turn_llm_input, session_id=self.session_id
            )
        agent, history = preloaded
        spec = get_agent(agent)
        tools = tool_specs(spec.tools) or None
        choice = tool_choice(tools, history)
        fitted = self.fit(spec.prompt, history, tools)
        if fitted.leading and settings.LLM_SUMMARY_TOKENS:
            summary = await self.summarise(agent, history[: fitted.leading])
            if summary:
                fitted = with_summary(
                    fitted, prompt=spec.prompt, summary=summary, tools=tools, model=self.model
                )
        started = time.monotonic()
        parts: list[str] = []
        completion: Completion | None = None
        failure: LLMError | None = None
        try:
            try:
                completion = await self._stream(fitted, tools, choice, reply, parts)
            except LLMContextOverflow as exc:
                # Nothing was streamed yet (it is the reply to the request): fit tighter and
                # ask once more, in the same turn. The refused call is recorded as failed.
                await self._record(agent, None, [], started, exc)
                fitted = self.refit(exc, fitted, spec.prompt, history, tools)
                started = time.monotonic()
                completion = await self._stream(fitted, tools, choice, reply, parts)
            if completion is None:
                failure = LLMStreamBroken("The model's stream ended without a result.")
            else:
                completion = self.account(completion, fitted.estimate)
        except LLMError as exc:
            failure = exc
        except asyncio.CancelledError:
            cancelled = LLMError("cancelled by the client")
            await asyncio.shield(
                self._record(agent, None, parts, started, cancelled, ended="cancelled")
            )
            raise
        # Text that reached the user before a failure is a reply cut short: say so.
        ended = "interrupted" if failure is not None and parts else None
        await self._record(
            agent, completion if failure is None else None, parts, started, failure, ended=ended
        )
        if failure is not None:
            await reply.flush()
            metadata = {**failure.chunk_metadata(), "agent": agent}
            cause = str(failure)
            cause = cause[:1].lower() + cause[1:]  # a sentence of its own, continued here
            text = f"The model call failed: {cause}"
            if ended:
                text = f"The reply was cut off: {cause} What arrived so far is kept."
                metadata.update(finish_reason=ended, truncated=True)
            await self.emit(error_chunk(text, **metadata))
            return None
        return completion

    async def _stream(
        self,
        fitted: Fitted,
        tools: list[dict[str, Any]] | None,
        choice: str | None,
        reply: Reply,
        parts: list[str],
    ) -> Completion | None:
        completion: Completion | None = None
        async for event in self.provider.stream_chat(
            messages=fitted.messages, tools=tools, tool_choice=choice
        ):
            if isinstance(event, Done):
                completion = event.completion
            elif event.text:
                parts.append(event.text)
                await reply.add(event.text)
        return completion

    # --- the context budget (agents.context, agents.tokens) ---------------------------------

    @property
    def model(self) -> str:
        return settings.LLM_MODEL if settings.LLM_BASE_URL else "demo"

    def fit(
        self,
        prompt: str,
        history: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        *,
        history_budget: int | None = None,
    ) -> Fitted:
        window = tokens.window(self.model, settings.LLM_CONTEXT_TOKENS)
        # An answer capped by LLM_MAX_TOKENS needs no more room than that (but a cap as large
        # as the window must not leave none for the question).
        reserve = settings.LLM_ANSWER_RESERVE_TOKENS or min(
            settings.LLM_MAX_TOKENS or min(DEFAULT_RESERVE_TOKENS, window // 4), window // 2
        )
        return fit_request(
            prompt=prompt,
            history=history,
            tools=tools,
            model=self.model,
            window=window,
            reserve=reserve,
            tool_output_chars=settings.LLM_TOOL_OUTPUT_CHARS,
            history_budget=history_budget,
            summary_tokens=settings.LLM_SUMMARY_TOKENS,
        )

    def refit(
        self,
        exc: LLMContextOverflow,
        fitted: Fitted,
        prompt: str,
        history: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
    ) -> Fitted:
        """After "context too long": learn the figures the provider stated, if any, and send
        at most half of the history sent before."""
        if exc.window:
            tokens.learn_window(self.model, exc.window)
        if exc.prompt_tokens:
            tokens.observe(self.model, estimated=fitted.estimate, reported=exc.prompt_tokens)
        logger.warning(
            "session %s: the model's context overflowed (%s tokens estimated, window %s); "
            "retrying with less history",
            self.session_id,
            fitted.tokens,
            exc.window or "unknown",
        )
        return self.fit(prompt, history, tools, history_budget=fitted.history_tokens // 2)

    async def summarise(self, agent: str, dropped: list[dict[str, Any]]) -> str:
        """A summary of the history's first messages, which no longer fit (LLM_SUMMARY_TOKENS).

        Kept in the cache with how many messages it covers: the stored history only grows,
        so a later turn summarises the summary and what has been left out since. "" when
        the call fails (the plain note is sent instead).
        """
        key = f"context-summary:{self.session_id}"
        covered, earlier = await cache.aget(key) or (0, "")
        if covered == len(dropped):
            return str(earlier)
        if covered > len(dropped):  # fewer left out than before (a larger window now)
            covered, earlier = 0, ""
        limit = settings.LLM_SUMMARY_TOKENS
        room = max(limit, tokens.window(self.model, settings.LLM_CONTEXT_TOKENS) // 2)
        transcript = transcript_of(dropped[covered:], chars=room * CHARS_PER_TOKEN)
        if earlier:
            transcript = f"The summary so far:\n{earlier}\n\nWhat followed:\n{transcript}"
        messages = [
            {"role": "system", "content": SUMMARY_PROMPT.format(words=limit * 3 // 4)},
            {"role": "user", "content": transcript},
        ]
        started = time.monotonic()
        completion: Completion | None = None
        error = ""
        try:
            completion = await self.provider.complete(messages=messages)
            completion = self.account(completion, tokens.estimate_request(messages, None))
        except LLMError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        await durable(
            "record the summary call",
            services.model_call_record,
            session_id=self.session_id,
            agent=agent,
            llm=self._usage("summary", started, completion, error, success=not error),
        )
        summary = (completion.text.strip() if completion else "")[: limit * CHARS_PER_TOKEN]
        if summary:
            await cache.aset(key, (len(dropped), summary), SUMMARY_CACHE_SECONDS)
        return summary

    def account(self, completion: Completion, estimate: int) -> Completion:
        """Learn from the usage the provider reported, or estimate the usage it did not."""
        if completion.usage is not None:
            tokens.observe(self.model, estimated=estimate, reported=completion.usage.prompt_tokens)
            return completion
        answer = tokens.estimate_message(
            {
                "content": completion.text,
                "tool_calls": [
                    {"function": {"name": c.name, "arguments": c.arguments}}
                    for c in completion.tool_calls
                ],
            }
        )
        usage = Usage(
            prompt_tokens=round(estimate * tokens.factor(self.model)),
            completion_tokens=answer,
            estimated=True,
        )
        return dataclasses.replace(completion, usage=usage)

    async def _record(
        self,
        agent: str,
        completion: Completion | None,
        parts: list[str],
        started: float,
        failure: LLMError | None,
        *,
        ended: str | None = None,
    ) -> None:
        """Store the call; ``ended`` is the finish reason of a reply that has no completion."""
        error = str(failure)[:500] if failure else ""
        llm = self._usage("turn", started, completion, error, success=failure is None)
        llm["error_type"] = type(failure).__name__ if failure else ""
        if ended:
            llm["finish_reason"] = ended
        await durable(
            "save the model's reply",
            services.completion_record,
            session_id=self.session_id,
            agent=agent,
            completion=completion,
            partial_text="".join(parts),
            llm=llm,
        )

    def _usage(
        self,
        purpose: str,
        started: float,
        completion: Completion | None,
        error: str,
        *,
        success: bool,
    ) -> dict[str, Any]:
        """The LLMRequest row of one model call: what it cost and how it went."""
        usage = completion.usage if completion else None
        elapsed = time.monotonic() - started
        return {
            "purpose": purpose,
            "provider": self.provider.label,
            "model": self.model,
            # When the call began (``started`` is a monotonic reading; the clock may step).
            "started_at": timezone.now() - timedelta(seconds=elapsed),
            "duration_ms": int(elapsed * 1000),
            "finish_reason": ((completion.finish_reason or "") if completion else "")[:32],
            "success": success,
            "error": error,
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
            "usage_estimated": bool(usage and usage.estimated),
            "has_tool_calls": bool(completion and completion.tool_calls),
        }

    # --- routing ----------------------------------------------------------------------------

    async def classify(self, text: str) -> Route:
        """Ask the model which specialist fits; fall back to keywords within the time limit."""
        started = time.monotonic()
        error = ""
        try:
            messages = [
                {"role": "system", "content": CLASSIFIER_PROMPT},
                {"role": "user", "content": text or "(empty message)"},
            ]
            async with asyncio.timeout(settings.ORCHESTRATOR_TIMEOUT_SECONDS):
                completion = await self.provider.complete(
                    messages=messages, response_format={"type": "json_object"}
                )
            completion = self.account(completion, tokens.estimate_request(messages, None))
            route = parse_classification(completion.text)
        except (LLMError, ValueError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
            keyword = route_by_keywords(text)
            route = Route(
                agent=keyword.agent,
                confidence=keyword.confidence,
                reasoning=f"{keyword.reasoning} (keyword fallback: the classifier failed)",
            )
            completion = None
        await durable(
            "record the routing call",
            services.classification_record,
            session_id=self.session_id,
            llm=self._usage("classify", started, completion, error, success=not error),
        )
        return route


def tool_choice(tools: list[dict[str, Any]] | None, history: list[dict[str, Any]]) -> str | None:
    """The ``tool_choice`` sent with ``tools`` (LLM_TOOL_CHOICE; None: the field is left out).

    ``required`` forces a tool call only where the model starts answering the user (the last
    message is theirs). After tool results it is ``auto``: the model must be free to answer in
    words, or it would call tools until MAX_LLM_ROUNDS_PER_REQUEST stops it.
    """
    setting = settings.LLM_TOOL_CHOICE
    if not tools or setting == "omit":
        return None
    if setting == "required" and not (history and history[-1]["role"] == "user"):
        return "auto"
    return str(setting)


def _last_user_text(history: list[dict[str, Any]]) -> str:
    for message in reversed(history):
        if message["role"] == "user":
            return str(message["content"])
    return ""
