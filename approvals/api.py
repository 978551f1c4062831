"""REST endpoints for approvals (PROTOCOL §2, §5)."""

from __future__ import annotations

from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from approvals.models import Approval
from sessions.services import session_get


@api_view(["GET"])
def pending_approvals(request: Request, session_id: str) -> Response:
    session = session_get(session_id=session_id)
    pending = [a.to_pending_dict() for a in Approval.objects.for_session(session).pending()]
    return Response({"session_id": session.id, "pending_approvals": pending, "count": len(pending)})
