"""REST endpoints for agents (PROTOCOL §2)."""

from __future__ import annotations

import math
from typing import Any

from rest_framework import serializers
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from agent_runtime.rest import StrictCharField, StrictSerializer, body
from agents import services
from agents.chunks import CONFIDENCE_LEVELS, HIGH, USER_REQUESTED
from agents.models import AgentContext
from agents.registry import available_agents
from agents.selectors import agent_switches
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


class ConfidenceField(serializers.Field):  # type: ignore[type-arg]
    """A level (the original's form, which the Gateway sends) or a score from 0 to 1."""

    def to_internal_value(self, data: Any) -> str | float:
        if isinstance(data, str) and data in CONFIDENCE_LEVELS:
            return data
        if (
            isinstance(data, int | float)
            and not isinstance(data, bool)
            and math.isfinite(data)
            and 0 <= data <= 1
        ):
            return float(data)
        raise serializers.ValidationError(
            f"must be one of {', '.join(CONFIDENCE_LEVELS)}, or a number from 0 to 1."
        )


class SwitchInput(StrictSerializer):
    target_agent = StrictCharField(max_length=32)
    reason = StrictCharField(required=False, allow_blank=True, default="", max_length=2000)
    confidence = ConfidenceField(required=False, allow_null=True)


@api_view(["POST"])
def agent_switch(request: Request, session_id: str) -> Response:
    session = session_get(session_id=session_id)
    data = SwitchInput(data=body(request))
    data.is_valid(raise_exception=True)
    given = data.validated_data.get("confidence")
    # A switch someone asked for by name is sure, unless they say otherwise.
    level: str | None = given if isinstance(given, str) else HIGH
    score = given if isinstance(given, float) else None
    context, _ = services.agent_switch(
        session=session,
        to_agent=data.validated_data["target_agent"],
        reason=data.validated_data["reason"] or USER_REQUESTED,
        confidence=None if score is not None else level,  # a score brings its own level
        score=score,
    )
    return Response({"context": context.to_dict(switch_history=agent_switches(session=session))})
