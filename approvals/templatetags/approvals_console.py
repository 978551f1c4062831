"""Template tags of the staff console."""

from __future__ import annotations

from typing import Any

from django import template
from django.db.models import Count, Min
from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timesince

from approvals.models import Approval

register = template.Library()


@register.inclusion_tag("admin/approvals/_pending_banner.html", takes_context=True)
def pending_approvals(context: template.Context) -> dict[str, Any]:
    """How many tool calls wait for a decision, and since when, linking to the queue.

    Only for staff who may see approvals; one aggregate query (the partial index on pending
    rows serves it).
    """
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not (
        user.has_perm("approvals.view_approval") or user.has_perm("approvals.decide_approval")
    ):
        return {"show": False}
    found = Approval.objects.pending().aggregate(count=Count("id"), oldest=Min("created_at"))
    url = reverse("admin:approvals_approval_changelist")
    return {
        "show": True,
        "count": found["count"],
        "waited": timesince(found["oldest"], timezone.now()) if found["oldest"] else "",
        "queue_url": f"{url}?status={Approval.Status.PENDING}",
    }
