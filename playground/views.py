"""The browser playground: a staff member chats with the agents over the session WebSocket.

The pages only draw; everything the staff member does travels over the runtime's own socket
(``/ws/{id}``, authenticated by the admin login and an Origin check in agents.consumers), as the
IDE's frames do: messages, ``tool_result`` answers and ``hitl_decision`` decisions, which the
consumer hands to ``approvals.services.approval_decide`` in the staff member's name when they
hold ``approvals.decide_approval``, and refuses otherwise. Who may see what is the admin's
answer (agent_runtime.staff): sessions for whoever may view them, acting for whoever may
decide. The API key never reaches the page.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse

from agent_runtime import staff
from agent_runtime.errors import ApplicationError
from agents.registry import available_agents, default_agent
from agents.tools import READ_ONLY_TOOLS
from playground.forms import SessionForm
from playground.services import session_start
from sessions.models import AgentSession, Message
from sessions.selectors import session_list, session_messages
from sessions.services import session_get

SIDEBAR_SESSIONS = 30
HISTORY_MESSAGES = 200  # the page opens on the latest; the admin has the whole history


def _staff_who_may_watch(request: HttpRequest) -> None:
    if not staff.may_watch(request.user):
        raise PermissionDenied(
            "The playground shows sessions: it needs the permission to view sessions or to "
            "decide approvals."
        )


@staff_member_required
def playground(request: HttpRequest) -> HttpResponse:
    """The session list and the form that starts a new one."""
    _staff_who_may_watch(request)
    if request.method == "POST" and not staff.may_decide(request.user):
        raise PermissionDenied("Starting a session needs the permission to decide approvals.")
    form = SessionForm(request.POST or None, initial={"agent": default_agent()})
    if request.method == "POST" and form.is_valid():
        try:
            session = session_start(
                session_id=form.cleaned_data["session_id"] or None,
                title=form.cleaned_data["title"],
                agent=form.cleaned_data["agent"],
            )
        except ApplicationError as exc:
            form.add_error("session_id", exc.detail)
        else:
            return redirect("playground:session", session_id=session.pk)
    return _page(request, form=form, session=None)


@staff_member_required
def session_page(request: HttpRequest, session_id: str) -> HttpResponse:
    """One session: its latest history drawn here, the live part by playground.js."""
    _staff_who_may_watch(request)
    try:
        session = session_get(session_id=session_id)
    except ApplicationError as exc:
        messages.error(request, exc.detail)
        return redirect("playground:index")
    return _page(request, form=SessionForm(initial={"agent": default_agent()}), session=session)


def _page(request: HttpRequest, *, form: SessionForm, session: AgentSession | None) -> HttpResponse:
    can_act = staff.may_decide(request.user)
    sessions, total = session_list(limit=SIDEBAR_SESSIONS, offset=0, active_only=False)
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": f"Playground: {session.pk}" if session else "Playground",
        "form": form,
        "sessions": sessions,
        "sessions_total": total,
        "session": session,
        "can_act": can_act,
        "multi_agent": settings.MULTI_AGENT_MODE,
        "agents": available_agents(),
    }
    if session is not None:
        history = session_messages(session=session, limit=HISTORY_MESSAGES)
        context["history"] = [_message_view(m) for m in history]
        context["history_cut"] = session.message_count > len(history)
        context["current_agent"] = session.agent_context.current_agent
        # Read by playground.js (json_script escapes it for the page).
        context["config"] = {
            "session_id": session.pk,
            "socket_path": f"/ws/{quote(session.pk, safe='')}?replay=outstanding",
            "can_act": can_act,
            "agents": [spec.type for spec in available_agents()],
            "read_only_tools": sorted(READ_ONLY_TOOLS),
        }
    return TemplateResponse(request, "playground/playground.html", context)


def _message_view(message: Message) -> dict[str, Any]:
    return {
        "role": message.role,
        "agent": message.agent,
        "content": message.content,
        "tool_calls": message.tool_calls_shown(),
        "tool_call_id": message.tool_call_id,
        "name": message.name,
    }
