"""REST endpoints for approvals (PROTOCOL §2, §5)."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema
from rest_framework import serializers
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from agent_runtime.errors import ApplicationError
from agent_runtime.jsonbody import clean_text
from agent_runtime.openapi import errors
from agent_runtime.rest import body
from agents.messages import CALL_ID_MAX, parse_decision
from approvals.models import Approval
from approvals.services import approval_decide
from sessions.services import session_get

DECIDER_RE = re.compile(r"^[\w.@+-]{1,100}$")

# --- Shapes, for the schema (drf-spectacular): the views build and parse the same dicts --------


class PendingDetailsSerializer(serializers.Serializer[Any]):
    arguments = serializers.DictField()


class PendingApprovalSerializer(serializers.Serializer[Any]):
    request_id = serializers.CharField(help_text="The call's id: decide by it.")
    request_type = serializers.ChoiceField(choices=["tool"])
    subject = serializers.CharField(help_text="The tool's name.")
    details = PendingDetailsSerializer()
    reason = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    call_id = serializers.CharField()
    tool_name = serializers.CharField()
    arguments = serializers.DictField()
    status = serializers.ChoiceField(choices=Approval.Status.choices)
    agent = serializers.CharField(allow_null=True)


class PendingApprovalsSerializer(serializers.Serializer[Any]):
    session_id = serializers.CharField()
    pending_approvals = PendingApprovalSerializer(many=True)
    count = serializers.IntegerField(min_value=0)


class ApprovalSerializer(serializers.Serializer[Any]):
    request_id = serializers.CharField()
    session_id = serializers.CharField()
    call_id = serializers.CharField()
    tool_name = serializers.CharField()
    arguments = serializers.DictField(help_text="As the model made them.")
    agent = serializers.CharField(allow_null=True)
    reason = serializers.CharField(allow_blank=True)
    status = serializers.ChoiceField(choices=Approval.Status.choices)
    created_at = serializers.DateTimeField()
    decided_at = serializers.DateTimeField(allow_null=True)
    decided_by = serializers.CharField(allow_null=True, help_text="ide, ide:<name>, staff:<user>…")
    edited_arguments = serializers.DictField(allow_null=True)
    feedback = serializers.CharField(allow_blank=True)


class ApprovalEnvelopeSerializer(serializers.Serializer[Any]):
    approval = ApprovalSerializer()


class ApproveOrRejectSerializer(serializers.Serializer[Any]):
    decision = serializers.ChoiceField(choices=["approve", "reject"])
    feedback = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=settings.APPROVAL_FEEDBACK_MAX_CHARS,
        help_text="Told to the model (and the IDE user) with the decision.",
    )
    decided_by = serializers.RegexField(
        DECIDER_RE.pattern, required=False, allow_null=True, help_text="Recorded as ide:<name>."
    )


class EditSerializer(ApproveOrRejectSerializer):
    decision = serializers.ChoiceField(choices=["edit"])
    modified_arguments = serializers.DictField(help_text="The arguments the IDE will execute.")


DECISION_BODY = PolymorphicProxySerializer(
    component_name="Decision",
    serializers={
        "approve": ApproveOrRejectSerializer,
        "reject": ApproveOrRejectSerializer,
        "edit": EditSerializer,
    },
    resource_type_field_name="decision",
)


# --- Views --------------------------------------------------------------------------------------


@extend_schema(
    summary="The session's tool calls waiting for a human decision",
    responses={200: PendingApprovalsSerializer, **errors(401, 404)},
)
@api_view(["GET"])
def pending_approvals(request: Request, session_id: str) -> Response:
    session = session_get(session_id=session_id)
    pending = [a.to_pending_dict() for a in Approval.objects.for_session(session).pending()]
    return Response({"session_id": session.id, "pending_approvals": pending, "count": len(pending)})


@extend_schema(
    summary="Decide a pending approval (the body of a hitl_decision); the session continues",
    request=DECISION_BODY,
    responses={200: ApprovalEnvelopeSerializer, **errors(400, 401, 404, 409, 413)},
)
@api_view(["POST"])
def approval_decision(request: Request, session_id: str, call_id: str) -> Response:
    """Decide over REST: the body of a ``hitl_decision`` (plus an optional ``decided_by``)."""
    session = session_get(session_id=session_id)
    data = body(request)
    if not isinstance(data, dict):
        raise ApplicationError("the body must be a JSON object.")
    if len(call_id) > CALL_ID_MAX:
        raise ApplicationError("call_id is too long.")
    call_id = clean_text(call_id)  # as a body's would be: a NUL is a 500 on PostgreSQL
    message = parse_decision(data, call_id=call_id)
    who = data.get("decided_by")
    if who is not None and (not isinstance(who, str) or not DECIDER_RE.fullmatch(who)):
        raise ApplicationError("decided_by must be 1-100 letters, digits or _.@+- characters.")
    approval = approval_decide(
        session_id=session.pk,
        call_id=call_id,
        decision=message.decision,
        decided_by_kind=Approval.DeciderKind.IDE,
        decided_by=f"ide:{who}" if who else "ide",
        modified_arguments=message.modified_arguments,
        feedback=message.feedback,
    )
    return Response({"approval": approval.to_dict()})
