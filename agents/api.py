"""REST endpoints for agents (PROTOCOL §2)."""

from __future__ import annotations

import math
from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from agent_runtime.openapi import AgentSwitchSerializer, errors
from agent_runtime.rest import StrictCharField, StrictSerializer, body, query
from agents import services
from agents.chunks import CONFIDENCE_LEVELS, HIGH, USER_REQUESTED
from agents.models import AgentContext
from agents.registry import available_agents
from agents.selectors import agent_switches
from sessions.services import session_get

# --- Response shapes, for the schema (drf-spectacular): the views build the same dicts ---------


class AgentSerializer(serializers.Serializer[Any]):
    type = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()
    allowed_tools = serializers.ListField(child=serializers.CharField())
    has_file_restrictions = serializers.BooleanField()


class AgentListSerializer(serializers.Serializer[Any]):
    agents = AgentSerializer(many=True)
    total = serializers.IntegerField(min_value=0)


class AgentContextSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    session_id = serializers.CharField()
    current_agent = serializers.CharField()
    switch_count = serializers.IntegerField(min_value=0)
    switch_history = AgentSwitchSerializer(
        many=True, allow_null=True, help_text="null unless asked for (include_history=true)."
    )
    last_switch_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


class AgentContextEnvelopeSerializer(serializers.Serializer[Any]):
    # DRF's metaclass moves declared fields off the class; the stubs see Field.context.
    context = AgentContextSerializer()  # type: ignore[assignment]


# --- Views --------------------------------------------------------------------------------------


@extend_schema(
    summary="The agents this runtime offers",
    responses={200: AgentListSerializer, **errors(401)},
)
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


@extend_schema(
    summary="A session's current agent (and its switch history)",
    parameters=[CurrentInput],
    responses={200: AgentContextEnvelopeSerializer, **errors(400, 401, 404)},
)
@api_view(["GET"])
def agent_current(request: Request, session_id: str) -> Response:
    session = session_get(session_id=session_id)
    params = CurrentInput(data=query(request))
    params.is_valid(raise_exception=True)
    context: AgentContext = session.agent_context
    history = agent_switches(session=session) if params.validated_data["include_history"] else None
    return Response({"context": context.to_dict(switch_history=history)})


@extend_schema_field(
    {
        # The types up front too (allow_null adds "null" here), so that tools see them at once.
        "type": ["string", "number"],
        "oneOf": [
            {"type": "string", "enum": list(CONFIDENCE_LEVELS)},
            {"type": "number", "minimum": 0, "maximum": 1},
            {"type": "null"},
        ],
    }
)
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


# The schema lists the agents of this process's mode; the service refuses any other by name.
@extend_schema_field({"type": "string", "enum": [spec.type for spec in available_agents()]})
class AgentTypeField(StrictCharField):
    pass


class SwitchInput(StrictSerializer):
    target_agent = AgentTypeField(max_length=32)
    reason = StrictCharField(required=False, allow_blank=True, default="", max_length=2000)
    confidence = ConfidenceField(required=False, allow_null=True)


@extend_schema(
    summary="Switch a session's agent (no model call)",
    request=SwitchInput,
    responses={200: AgentContextEnvelopeSerializer, **errors(400, 401, 404, 413)},
)
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
