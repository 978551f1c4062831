"""REST endpoints for approvals (PROTOCOL §2, §5)."""

from __future__ import annotations

import re

from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from agent_runtime.errors import ApplicationError
from agent_runtime.rest import body
from agents.messages import CALL_ID_MAX, parse_decision
from approvals.models import Approval
from approvals.services import approval_decide
from sessions.services import session_get

DECIDER_RE = re.compile(r"^[\w.@+-]{1,100}$")


@api_view(["GET"])
def pending_approvals(request: Request, session_id: str) -> Response:
    session = session_get(session_id=session_id)
    pending = [a.to_pending_dict() for a in Approval.objects.for_session(session).pending()]
    return Response({"session_id": session.id, "pending_approvals": pending, "count": len(pending)})


@api_view(["POST"])
def approval_decision(request: Request, session_id: str, call_id: str) -> Response:
    """Decide over REST: the body of a ``hitl_decision`` (plus an optional ``decided_by``)."""
    session = session_get(session_id=session_id)
    data = body(request)
    if not isinstance(data, dict):
        raise ApplicationError("the body must be a JSON object.")
    if len(call_id) > CALL_ID_MAX:
        raise ApplicationError("call_id is too long.")
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
