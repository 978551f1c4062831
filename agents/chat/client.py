"""The chat's side of the protocol (docs: README "Chat in the terminal", PROTOCOL §3–§5).

REST (httpx) finds or creates the session and, with ``--agent``, switches it; everything else
goes over the session WebSocket, as an IDE connecting directly would: ``user_message`` out,
chunks in, every ``tool_call`` answered with a ``tool_result``. A call the runtime holds for
approval is decided by a ``hitl_decision`` (the runtime's approval service records it) and
executed only when the runtime releases it, with the arguments it releases (edited or not).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from agents.chat.terminal import CtrlC, Terminal
from agents.chat.workspace import ToolError, Workspace
from agents.tools import CONTROL_TOOLS, READ_ONLY_TOOLS, RUNTIME_TOOLS, TOOL_NAMES

T = TypeVar("T")

EXECUTED_HERE = frozenset(TOOL_NAMES) - RUNTIME_TOOLS - CONTROL_TOOLS
MAX_FRAME_BYTES = 64 * 1024 * 1024  # a write_file call carries a whole file
LOOPBACK = ("127.0.0.1", "localhost", "::1", "0.0.0.0")  # noqa: S104 (a host to call, not to bind)
CLOSE_REASONS = {
    1001: "the runtime went away (stopping or restarting)",
    1006: "the connection was lost (is the runtime still running?)",
    4401: "the runtime refused the API key (set INTERNAL_API_KEY to the server's key)",
    4404: "the runtime does not know this session",
    4503: "the runtime's channel layer is unreachable; try again in a moment",
}
HELP = (
    "Type a message and press Enter. Ctrl-C cancels a running turn, Ctrl-C at the prompt or "
    "Ctrl-D quits. /agent NAME switches the agent, /help shows this, /quit quits."
)


class ChatError(Exception):
    """Why the chat cannot go on (the command prints it and exits 1)."""


class Interrupted(Exception):
    """Ctrl-C stopped something running here (a tool, a question): back to the prompt."""


@dataclass(frozen=True)
class Target:
    http: str
    ws: str
    key: str

    @property
    def loopback(self) -> bool:
        return urlsplit(self.http).hostname in LOOPBACK


def target_for(url: str | None, *, key: str) -> Target:
    """The runtime's HTTP and WebSocket bases: ``url``, else the one ``make run`` starts
    (HOST and PORT as the Makefile reads them)."""
    if not url:
        host = os.environ.get("HOST") or "127.0.0.1"
        if host == "0.0.0.0":  # noqa: S104  bound to every interface: reach it locally
            host = "127.0.0.1"
        url = f"http://{host}:{os.environ.get('PORT') or '8000'}"
    if "://" not in url:
        url = f"http://{url}"
    parts = urlsplit(url)
    schemes = {"http": ("http", "ws"), "ws": ("http", "ws"), "https": ("https", "wss")}
    schemes["wss"] = schemes["https"]
    if parts.scheme not in schemes or not parts.netloc:
        raise ChatError(f"not a runtime URL: {url!r} (expected http://host:port)")
    http, ws = schemes[parts.scheme]
    path = parts.path.rstrip("/")
    return Target(
        http=urlunsplit((http, parts.netloc, path, "", "")),
        ws=urlunsplit((ws, parts.netloc, path, "", "")),
        key=key,
    )


class Inbox:
    """Frames from the socket, in order; a waiter can learn one arrived without taking it."""

    def __init__(self) -> None:
        self.items: collections.deque[dict[str, Any] | ChatError] = collections.deque()
        self.arrived = asyncio.Event()

    def put(self, item: dict[str, Any] | ChatError) -> None:
        self.items.append(item)
        self.arrived.set()

    async def wait(self) -> None:
        while not self.items:
            self.arrived.clear()
            await self.arrived.wait()

    async def get(self) -> dict[str, Any]:
        await self.wait()
        item = self.items.popleft()
        if isinstance(item, ChatError):
            self.items.appendleft(item)  # the socket is gone for every later reader too
            raise item
        return item


# What the client is doing, for Ctrl-C: following a turn the runtime runs (cancel it there),
# running something here (stop it), or waiting at the prompt (quit).
IDLE, WAITING, LOCAL = "idle", "waiting", "local"


class Chat:
    def __init__(
        self,
        *,
        target: Target,
        workspace: Workspace,
        terminal: Terminal,
        session_id: str | None = None,
        agent: str | None = None,
    ) -> None:
        self.target = target
        self.workspace = workspace
        self.terminal = terminal
        self.session_id = session_id or ""
        self.wanted_agent = agent
        self.agent = ""
        self.inbox = Inbox()
        self.phase = IDLE
        self.cancel_sent = False
        self.quitting = False
        self.step: asyncio.Future[Any] | None = None
        self.main: asyncio.Task[None] | None = None
        self.question: str | None = None  # an ask_followup_question call the next line answers
        self.background: set[asyncio.Task[Any]] = set()

    # --- start and stop --------------------------------------------------------------------

    async def run(self) -> None:
        """Chat until the user quits; ChatError when the runtime cannot be used."""
        headers = {"X-Internal-Auth": self.target.key}
        trust_env = not self.target.loopback  # a proxy from the environment is not for localhost
        async with httpx.AsyncClient(
            base_url=self.target.http, headers=headers, timeout=15.0, trust_env=trust_env
        ) as self.http:
            await self.open_session()
            url = f"{self.target.ws}/ws/{quote(self.session_id, safe='')}?replay=outstanding"
            try:
                connection = websockets.connect(
                    url,
                    additional_headers=headers,
                    max_size=MAX_FRAME_BYTES,
                    open_timeout=15,
                    close_timeout=3,
                    proxy=True if trust_env else None,
                )
                async with connection as socket:
                    await self.chat_on(socket)
            except (OSError, websockets.exceptions.InvalidHandshake) as exc:
                raise ChatError(f"cannot open the session's WebSocket at {url}: {exc}") from exc

    async def chat_on(self, socket: ClientConnection) -> None:
        self.socket = socket
        loop = asyncio.get_running_loop()
        receiver = asyncio.create_task(self.receive())
        self.main = asyncio.create_task(self.converse())
        loop.add_signal_handler(signal.SIGINT, self.interrupt)
        try:
            await self.main
        except asyncio.CancelledError:
            if not self.quitting:
                raise
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            receiver.cancel()
            self.terminal.stop_thinking()
            self.terminal.end_line()

    def quit(self) -> None:
        self.quitting = True
        if self.main is not None:
            self.main.cancel()

    def interrupt(self) -> None:
        """Ctrl-C (SIGINT): cancel the runtime's turn, stop what runs here, or quit."""
        if self.phase == WAITING and not self.cancel_sent:
            self.cancel_sent = True
            self.terminal.note("cancelling the turn… (Ctrl-C again quits)", "yellow")
            self.spawn(self.send({"type": "cancel"}))
        elif self.phase == LOCAL and self.step is not None:
            self.step.cancel()
        else:
            self.quit()

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # --- REST ------------------------------------------------------------------------------

    async def rest(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ChatError(
                f"cannot reach the runtime at {self.target.http} ({exc}); is it running (make run)?"
            ) from exc
        if response.status_code == 401:
            raise ChatError(CLOSE_REASONS[4401])
        return response

    async def open_session(self) -> None:
        """The session named by --session (created if new), else a new one; then --agent."""
        if self.session_id:
            found = await self.rest("GET", f"/sessions/{quote(self.session_id, safe='')}")
            if found.status_code == 404:
                await self.create_session({"session_id": self.session_id})
            elif found.status_code != 200:
                raise ChatError(_detail(found))
        else:
            await self.create_session({})
        sid = quote(self.session_id, safe="")
        if self.wanted_agent:
            switched = await self.rest(
                "POST",
                f"/agents/{sid}/switch",
                json={"target_agent": self.wanted_agent, "reason": "chosen with chat --agent"},
            )
            if switched.status_code != 200:
                raise ChatError(_detail(switched))
        current = await self.rest("GET", f"/agents/{sid}/current")
        if current.status_code != 200:
            raise ChatError(_detail(current))
        self.agent = current.json()["context"]["current_agent"]
        self.terminal.note(
            f"session {self.session_id} · agent {self.agent} · workspace "
            f"{self.workspace.root} · {self.target.http}",
            "bold",
        )
        self.terminal.note(HELP)

    async def create_session(self, body: dict[str, Any]) -> None:
        created = await self.rest("POST", "/sessions", json=body)
        if created.status_code != 201:
            raise ChatError(_detail(created))
        self.session_id = created.json()["id"]

    async def pending(self, call_id: str) -> bool:
        listed = await self.rest(
            "GET", f"/sessions/{quote(self.session_id, safe='')}/pending-approvals"
        )
        calls = listed.json().get("pending_approvals", []) if listed.status_code == 200 else []
        return any(item.get("call_id") == call_id for item in calls)

    # --- the socket ------------------------------------------------------------------------

    async def receive(self) -> None:
        try:
            async for raw in self.socket:
                try:
                    chunk = json.loads(raw)
                except ValueError:
                    chunk = None
                if isinstance(chunk, dict):
                    self.inbox.put(chunk)
                else:
                    self.terminal.error(f"the runtime sent a frame that is not a chunk: {raw!r}")
        except websockets.exceptions.ConnectionClosed:
            pass
        close = self.socket.close_code
        why = CLOSE_REASONS.get(close or 0, f"close code {close}")
        self.inbox.put(ChatError(f"the runtime closed the connection: {why}"))

    async def send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            await self.socket.send(json.dumps(message))  # a closed socket: receive() says so

    async def next_chunk(self) -> dict[str, Any]:
        """The next frame while the runtime works for us (Ctrl-C cancels its turn)."""
        self.phase = WAITING
        if not self.terminal.mid_line:
            self.terminal.thinking()
        try:
            return await self.inbox.get()
        finally:
            self.phase = IDLE

    async def local(self, work: Awaitable[T]) -> T:
        """Run ``work`` here; Ctrl-C stops it (Interrupted) instead of quitting."""
        step: asyncio.Future[T] = asyncio.ensure_future(work)
        self.step = step
        self.phase = LOCAL
        try:
            return await step
        except asyncio.CancelledError:
            if self.quitting or not step.cancelled():
                raise
            raise Interrupted from None
        except CtrlC:
            raise Interrupted from None
        finally:
            self.phase = IDLE
            self.step = None

    # --- the conversation ------------------------------------------------------------------

    async def converse(self) -> None:
        while True:
            line = await self.idle()
            if line is None:
                self.quit()
                return
            message = self.message_for(line)
            if message is None:
                continue
            self.cancel_sent = False
            await self.send(message)
            await self.follow(await self.next_chunk())

    async def idle(self) -> str | None:
        """The user's next line (None: quit). Frames that arrive meanwhile (another client's
        turn, a staff decision) are shown and acted on first, then the prompt comes back."""
        while True:
            if self.inbox.items:
                self.cancel_sent = False
                await self.follow(await self.inbox.get())
                continue
            label = "answer" if self.question else "you"
            try:
                line = await self.before_next_frame(self.terminal.ask(label))
            except (EOFError, CtrlC):
                return None
            if line is not None:
                return line

    async def before_next_frame(self, work: Awaitable[T]) -> T | None:
        """``work``'s result, or None when a frame arrives first (``work`` is then stopped:
        the session moved on while the user was answering, and the answer may be moot)."""
        doing = asyncio.ensure_future(work)
        arriving = asyncio.ensure_future(self.inbox.wait())
        try:
            await asyncio.wait({doing, arriving}, return_when=asyncio.FIRST_COMPLETED)
            return doing.result() if doing.done() else None
        finally:
            arriving.cancel()
            if not doing.done():
                doing.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await doing

    def message_for(self, line: str) -> dict[str, Any] | None:
        """What a typed line sends: a message, an answer to an open question, or a command."""
        text = line.strip()
        if text in ("/quit", "/exit"):
            self.quit()
            return None
        if text == "/help":
            self.terminal.note(HELP)
            return None
        if text == "/agent" or text.startswith("/agent "):
            name = text.removeprefix("/agent").strip()
            if not name:
                self.terminal.note(f"the agent is {self.agent}; /agent NAME switches")
                return None
            return {"type": "switch_agent", "agent_type": name}
        if not text:
            return None
        if self.question:
            call_id, self.question = self.question, None
            return {"type": "tool_result", "call_id": call_id, "result": line}
        return {"type": "user_message", "content": line, "role": "user"}

    async def follow(self, chunk: dict[str, Any]) -> None:
        """Show ``chunk`` and keep following the session while it works for this client."""
        while await self.on_chunk(chunk):
            chunk = await self.next_chunk()

    async def on_chunk(self, chunk: dict[str, Any]) -> bool:
        """Show one chunk and act on it; True while more is on its way for us."""
        kind = chunk.get("type")
        final = bool(chunk.get("is_final"))
        metadata = chunk.get("metadata") or {}
        text = chunk.get("content") or chunk.get("token") or ""
        if kind == "assistant_message":
            decision = metadata.get("decision")
            if isinstance(decision, dict):  # what a human decided, told in its own frame
                self.terminal.note(f"✗ {text.strip()}", "red")
            else:
                self.terminal.token(text, agent=self.agent)
            if final:
                self.terminal.end_line()
            return not final
        if kind == "agent_switched":
            self.agent = metadata.get("to_agent") or self.agent
            why = ", ".join(
                str(part) for part in (metadata.get("reason"), metadata.get("confidence")) if part
            )
            self.terminal.note(f"⇄ {text}" + (f" ({why})" if why else ""), "magenta")
            return not final
        if kind == "error":
            if self.cancel_sent:
                self.terminal.note(text, "yellow")
            else:
                self.terminal.error(text)
            return False
        if kind == "tool_call":
            return await self.on_call(chunk)
        self.terminal.note(f"(a {kind!r} frame this client does not know)")
        return not final

    async def on_call(self, chunk: dict[str, Any]) -> bool:
        call_id = str(chunk.get("call_id"))
        name = str(chunk.get("tool_name"))
        arguments = chunk.get("arguments") or {}
        decision = (chunk.get("metadata") or {}).get("decision")
        if name == "attempt_completion":
            # Shown; left open: the runtime closes it when the user speaks next.
            self.terminal.note(f"✓ {arguments.get('result', '')}", "bold green")
            return False
        if name == "ask_followup_question":
            self.terminal.note(f"? {arguments.get('question', '')}", "bold")
            self.question = call_id
            return False
        if chunk.get("requires_approval"):
            return await self.decide(call_id, name, arguments)
        if isinstance(decision, dict):
            self.terminal.note(f"✓ {decision.get('summary', 'decided')}", "green")
        elif name not in READ_ONLY_TOOLS and name in EXECUTED_HERE:
            # Released without a hold (the runtime's policy lets it through): this client
            # still runs nothing that changes the workspace without the user's yes.
            self.terminal.call(name, arguments, prefix="?")
            try:
                answer = await self.local(self.terminal.ask("run it here? [y/N]"))
            except Interrupted:
                return False
            except EOFError:
                self.quit()
                return False
            if answer.strip().lower() not in ("y", "yes"):
                await self.send(_result(call_id, error="The user declined to run it."))
                return True
        return await self.execute(call_id, name, arguments)

    async def execute(self, call_id: str, name: str, arguments: dict[str, Any]) -> bool:
        self.terminal.call(name, arguments)
        if name not in EXECUTED_HERE:
            await self.send(_result(call_id, error=f"The terminal chat cannot run {name}."))
            return True
        try:
            result = await self.local(self.workspace.run(name, arguments))
        except ToolError as exc:
            self.terminal.note(f"  ✗ {exc}", "red")
            await self.send(_result(call_id, error=str(exc)))
            return True
        except Interrupted:
            self.terminal.note(
                f"stopped {name}; the call stays open until your next message", "yellow"
            )
            return False
        first = result.split("\n", 1)[0]
        more = f" ({len(result)} characters)" if len(result) > len(first) else ""
        self.terminal.note(f"  ← {first[:100]}{more}")
        await self.send(_result(call_id, result=result))
        return True

    async def decide(self, call_id: str, name: str, arguments: dict[str, Any]) -> bool:
        """Ask the user about a held call and send the decision to the runtime (its
        approvals service records it and releases the call, or tells the model no)."""
        self.terminal.approval(name, arguments)
        while True:
            try:
                message = await self.before_next_frame(
                    self.local(self.decision(call_id, arguments))
                )
            except Interrupted:
                self.terminal.note("left undecided; your next message cancels it", "yellow")
                return False
            except EOFError:
                self.quit()
                return False
            if message is None:  # a frame came first: decided elsewhere (the admin, say)?
                if not await self.pending(call_id):
                    self.terminal.note(f"{name} was decided elsewhere", "yellow")
                    return True  # what was decided follows
                await self.on_chunk(await self.inbox.get())
                continue
            await self.send(message)
            answer = await self.next_chunk()
            if answer.get("type") != "error" or not await self.pending(call_id):
                return await self.on_chunk(answer)
            # Refused (an edit the agent's policy forbids, say): the call still waits.
            self.terminal.error(answer.get("content") or "the decision was refused")

    async def decision(self, call_id: str, arguments: dict[str, Any]) -> dict[str, Any]:
        while True:
            answer = await self.terminal.ask("[a]pprove, [e]dit or [r]eject")
            word, _, rest = answer.strip().partition(" ")
            word = word.lower()
            if word in ("a", "approve", "y", "yes"):
                return {"type": "hitl_decision", "call_id": call_id, "decision": "approve"}
            if word in ("r", "reject", "n", "no"):
                feedback = rest.strip() or await self.terminal.ask("reason (optional)")
                return {
                    "type": "hitl_decision",
                    "call_id": call_id,
                    "decision": "reject",
                    "feedback": feedback.strip(),
                }
            if word in ("e", "edit"):
                edited = await self.edited(arguments)
                return {
                    "type": "hitl_decision",
                    "call_id": call_id,
                    "decision": "edit",
                    "modified_arguments": edited,
                }
            self.terminal.note("answer a (approve), e (edit) or r (reject, with a reason)")

    async def edited(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """New arguments as a JSON object: the old ones to change in place on a terminal
        (Esc Enter ends), one line of JSON elsewhere."""
        if self.terminal.interactive:
            self.terminal.note("edit the arguments; Esc then Enter sends them")
        while True:
            raw = await self.terminal.ask(
                "arguments",
                default=json.dumps(arguments, indent=2, ensure_ascii=False),
                multiline=self.terminal.interactive,
            )
            try:
                edited = json.loads(raw)
            except ValueError as exc:
                self.terminal.error(f"not JSON: {exc}")
                continue
            if isinstance(edited, dict):
                return edited
            self.terminal.error("the arguments must be a JSON object")


def _result(call_id: str, *, result: Any = None, error: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "tool_result", "call_id": call_id, "result": result}
    if error is not None:
        message["error"] = error
    return message


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return f"{response.status_code}: {detail or response.text[:200]}"
