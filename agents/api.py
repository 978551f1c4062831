"""REST endpoints for agents (PROTOCOL §2)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from agents import services
from agents.models import AgentContext
from agents.registry import available_agents
from sessions.api import StrictCharField, StrictSerializer, body
from sessions.selectors import agent_switches
from sessions.services import session_get


@api_view(["GET"])
def agents_list(request: Request) -> Response:
    agents = [
        {
            "type": spec.type,
            "name": spec.name,
            "description": spec.description,
            "allowed_tools": sorted(spec.tools),
            "has_file_restrictions": spec.has_file_restrictions,
        }
        for spec in available_agents()
    ]
    return Response({"agents": agents, "total": len(agents)})


class CurrentInput(serializers.Serializer[Any]):
    include_history = serializers.BooleanField(default=False)


@api_view(["GET"])
def agent_current(request: Request, session_id: str) -> Response:
    session = session_get(session_id=session_id)
    params = CurrentInput(data=request.query_params)
    params.is_valid(raise_exception=True)
    context: AgentContext = session.agent_context
    history = agent_switches(session=session) if params.validated_data["include_history"] else None
    return Response({"context": context.to_dict(switch_history=history)})


class SwitchInput(StrictSerializer):
    target_agent = StrictCharField(max_length=32)
    reason = StrictCharField(required=False, allow_blank=True, default="", max_length=2000)
    confidence = serializers.FloatField(
        required=False, allow_null=True, min_value=0.0, max_value=1.0
    )


@api_view(["POST"])
def agent_switch(request: Request, session_id: str) -> Response:
    session = session_get(session_id=session_id)
    data = SwitchInput(data=body(request))
    data.is_valid(raise_exception=True)
    context, _ = services.agent_switch(
        session=session,
        to_agent=data.validated_data["target_agent"],
        reason=data.validated_data["reason"] or "explicit switch",
        confidence=data.validated_data.get("confidence"),
    )
    return Response({"context": context.to_dict(switch_history=agent_switches(session=session))})
