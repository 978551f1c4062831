"""The staff approval queue, the per-approval decision page and the bulk decisions.

Every decision goes through ``approvals.services.approval_decide`` (the same service the IDE,
the REST API and the expiry job use), which continues the session itself once it has
committed, so the session's live clients see the outcome at once.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import flatten_fieldsets, quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.text import Truncator
from django.utils.timesince import timesince

from agent_runtime.errors import ApplicationError
from agents.policy import get_policy
from agents.registry import UnknownAgent, get_agent
from approvals.diffs import ArgumentsDiff, arguments_diff
from approvals.forms import DecisionForm, pretty_arguments
from approvals.models import Approval
from approvals.services import approval_decide
from sessions.admin import pretty_json
from sessions.models import Message

logger = logging.getLogger(__name__)

CONVERSATION_MESSAGES = 20
MESSAGE_CHARS = 4000  # a read_file result can be huge; the page shows its head
SUMMARY_CHARS = 80
DONE = {
    "approve": "Approved",
    "edit": "Edited and released",
    "release": "Edited and released",
    "reject": "Rejected",
}
# The queue's columns depend on the status shown (ApprovalAdmin.get_list_display): pending rows
# have no outcome, decided ones no decide link (in "All", a pending row's outcome is its decide
# link). Few columns, so that the table fits 1366 px beside the navigation and the filters
# without scrolling sideways.
QUEUE_COLUMNS = ("decide_link", "tool_name", "arguments_summary", "session_link", "agent", "age")
DECIDED_COLUMNS = (
    "tool_name",
    "arguments_summary",
    "session_link",
    "agent",
    "requested",
    "outcome",
)


class StatusFilter(admin.SimpleListFilter):
    """Status, with the queue (pending) as the default; "All" lifts it."""

    title = "status"
    parameter_name = "status"
    ALL = "all"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [*Approval.Status.choices, (self.ALL, "All")]

    def value(self) -> str:
        return super().value() or Approval.Status.PENDING

    def choices(self, changelist: Any) -> Any:
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == str(lookup),
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet[Approval]) -> QuerySet[Approval]:
        if self.value() == self.ALL:
            return queryset
        return queryset.filter(status=self.value())


def arguments_view(tool_name: str, arguments: Any) -> dict[str, Any]:
    """How the decision page shows a call's arguments: the parts a human must read, readably."""
    if not isinstance(arguments, dict):
        return {"kind": "json", "json": pretty_arguments(arguments)}
    rest = None
    if tool_name == "write_file" and isinstance(arguments.get("path"), str):
        others = {k: v for k, v in arguments.items() if k not in ("path", "content")}
        rest = pretty_arguments(others) if others else None
        content = arguments.get("content")
        return {
            "kind": "write_file",
            "path": arguments["path"],
            "content": content if isinstance(content, str) else pretty_arguments(content),
            "rest": rest,
        }
    if tool_name == "execute_command" and isinstance(arguments.get("command"), str):
        others = {k: v for k, v in arguments.items() if k not in ("command", "cwd")}
        return {
            "kind": "execute_command",
            "command": arguments["command"],
            "cwd": arguments.get("cwd"),
            "rest": pretty_arguments(others) if others else None,
        }
    return {"kind": "json", "json": pretty_arguments(arguments)}


def _when(moment: datetime) -> str:
    return date_format(timezone.localtime(moment), "Y-m-d H:i")


def edit_diff(approval: Approval) -> ArgumentsDiff | None:
    """What the staff member's edit changed, for a decided edit; None for anything else."""
    if approval.edited_arguments is None:
        return None
    return arguments_diff(approval.arguments, approval.edited_arguments)


def edit_preview(approval: Approval, cleaned: dict[str, Any]) -> dict[str, Any]:
    """What a submitted edit would change, and whether the agent's policy lets it through.

    ``approval_decide`` checks the policy again on release; asking it here too spares the
    staff member a second press for an edit that cannot pass.
    """
    edited = cleaned["modified_arguments"]
    try:
        refusal = get_policy().check(
            agent=get_agent(approval.agent), tool_name=approval.tool_name, arguments=edited
        )
    except UnknownAgent as exc:
        reason: str | None = str(exc)
    else:
        reason = refusal.reason if refusal is not None else None
    return {
        "diff": arguments_diff(approval.arguments, edited),
        "digest": cleaned["edit_digest"],
        "refusal": reason,
    }


def conversation(approval: Approval) -> list[dict[str, Any]]:
    """The session's last messages, oldest first, with tool calls unpacked for the template."""
    recent = Message.objects.filter(session_id=approval.session_id).order_by("-seq")
    rows = []
    for message in reversed(recent[:CONVERSATION_MESSAGES]):
        calls = [
            {**call, "is_this": call["id"] == approval.call_id}
            for call in message.tool_calls_shown()
        ]
        rows.append(
            {
                "seq": message.seq,
                "role": message.role,
                "agent": message.agent,
                "content": Truncator(message.content).chars(MESSAGE_CHARS),
                "tool_calls": calls,
                "tool_call_id": message.tool_call_id,
                "is_this": message.tool_call_id == approval.call_id,
                "created_at": message.created_at,
            }
        )
    return rows


@admin.register(Approval)
class ApprovalAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = QUEUE_COLUMNS
    list_display_links = ["tool_name"]
    list_filter = [StatusFilter, "tool_name", "agent"]
    search_fields = ["session__id", "call_id"]
    search_help_text = "Search by session id or call id."
    ordering = ["created_at", "id"]  # the queue: oldest first
    list_per_page = 50
    actions = ["approve_selected", "reject_selected"]
    fieldsets = [
        (None, {"fields": ["session", "call_id", "tool_name", "agent", "reason", "status"]}),
        ("Arguments", {"fields": ["arguments_pretty", "edited_arguments_pretty", "edit_changes"]}),
        (
            "Decision",
            {
                "fields": [
                    "created_at",
                    "decided_at",
                    "decided_by_kind",
                    "decided_by",
                    "decided_by_user",
                    "feedback",
                ]
            },
        ),
    ]
    readonly_fields = flatten_fieldsets(fieldsets)

    # --- permissions: the admin only ever decides, through the service -----------------------

    def has_decide_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("approvals.decide_approval")

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Whoever may decide may see what they decide.
        return super().has_view_permission(request, obj) or self.has_decide_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    # --- the queue ----------------------------------------------------------------------------

    @admin.display(description="session", ordering="session_id")
    def session_link(self, obj: Approval) -> str:
        url = reverse(
            "admin:agent_sessions_agentsession_change",
            args=(quote(obj.session_id),),
            current_app=self.admin_site.name,
        )
        return format_html('<a href="{}">{}</a>', url, obj.session_id)

    @admin.display(description="arguments")
    def arguments_summary(self, obj: Approval) -> str:
        args = obj.arguments if isinstance(obj.arguments, dict) else {}
        if obj.tool_name == "write_file" and isinstance(args.get("path"), str):
            content = args.get("content")
            size = len(content) if isinstance(content, str) else 0
            return f"{args['path']} ({size} chars)"
        if obj.tool_name == "execute_command" and isinstance(args.get("command"), str):
            return Truncator("$ " + args["command"]).chars(SUMMARY_CHARS)
        text = json.dumps(obj.arguments, ensure_ascii=False, separators=(",", ":"))
        return Truncator(text).chars(SUMMARY_CHARS)

    def get_list_display(self, request: HttpRequest) -> tuple[str, ...]:
        status = request.GET.get(StatusFilter.parameter_name) or Approval.Status.PENDING
        if status == Approval.Status.PENDING:
            return QUEUE_COLUMNS
        return DECIDED_COLUMNS

    @admin.display(description="waiting", ordering="created_at")
    def age(self, obj: Approval) -> str:
        return format_html(
            '<span title="requested {}">{}</span>',
            _when(obj.created_at),
            timesince(obj.created_at, obj.decided_at or timezone.now()),
        )

    @admin.display(description="requested", ordering="created_at")
    def requested(self, obj: Approval) -> str:
        return _when(obj.created_at)

    @admin.display(description="outcome", ordering="status")
    def outcome(self, obj: Approval) -> str:
        """ "Edited by staff:alice after 3 minutes": status, decider and delay in one column.

        A pending row (in "All") gets its decide link here rather than a column of its own.
        """
        if obj.is_pending:
            return format_html("Pending: {}", self.decide_link(obj))
        if obj.decided_at is None:
            return obj.get_status_display()
        by = f" by {obj.decided_by}" if obj.decided_by else ""
        took = timesince(obj.created_at, obj.decided_at)
        return format_html(
            '<span title="decided {}">{}{} after {}</span>',
            _when(obj.decided_at),
            obj.get_status_display(),
            by,
            took,
        )

    @admin.display(description="")
    def decide_link(self, obj: Approval) -> str:
        if not obj.is_pending:
            return "-"
        return format_html('<a class="decide-link" href="{}">Decide →</a>', self.decide_url(obj.pk))

    def decide_url(self, pk: Any) -> str:
        return reverse(
            "admin:approvals_approval_decide", args=(quote(pk),), current_app=self.admin_site.name
        )

    @admin.display(description="arguments")
    def arguments_pretty(self, obj: Approval) -> str:
        return pretty_json(obj.arguments)

    @admin.display(description="edited arguments")
    def edited_arguments_pretty(self, obj: Approval) -> str:
        return pretty_json(obj.edited_arguments)

    @admin.display(description="what the edit changed")
    def edit_changes(self, obj: Approval) -> str:
        diff = edit_diff(obj)
        if diff is None:
            return "-"
        return render_to_string(
            "admin/approvals/approval/_diff.html", {"diff": diff, "prefix": "edit"}
        )

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        rows = Approval.objects.order_by().values("status").annotate(n=Count("id"))
        counts = {row["status"]: row["n"] for row in rows}
        current = request.GET.get(StatusFilter.parameter_name) or Approval.Status.PENDING
        status_counts = [
            {
                "value": value,
                "label": label,
                "count": counts.get(value, 0),
                "selected": current == value,
            }
            for value, label in Approval.Status.choices
        ]
        context = {
            "title": "Approval queue",
            "status_counts": status_counts,
            "total_count": sum(counts.values()),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        approval = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if approval is not None and approval.is_pending:
            context["decide_url"] = self.decide_url(approval.pk)
        return super().change_view(request, object_id, form_url, extra_context=context)

    # --- deciding -----------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        decide = path(
            "<path:object_id>/decide/",
            self.admin_site.admin_view(self.decide_view),
            name="{}_{}_decide".format(*info),
        )
        # Before the stock patterns: their "<path:object_id>/" would swallow it.
        return [decide, *super().get_urls()]

    def decide(
        self,
        request: HttpRequest,
        approval: Approval,
        *,
        decision: str,
        modified_arguments: dict[str, Any] | None = None,
        feedback: str = "",
    ) -> Approval:
        """Decide one approval as the staff user, then let the session continue.

        Raises ApplicationError (nothing changed) when the service refuses the decision.
        """
        decided = approval_decide(
            session_id=approval.session_id,
            call_id=approval.call_id,
            decision=decision,
            decided_by_kind=Approval.DeciderKind.STAFF,
            decided_by=f"staff:{request.user.get_username()}",
            user=request.user,  # type: ignore[arg-type]
            modified_arguments=modified_arguments,
            feedback=feedback,
        )
        self.log_change(request, decided, f"Decided: {decided.status}.")
        # The service continues the session itself once the decision is committed.
        return decided

    def decide_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        approval = self.get_object(request, unquote(object_id))
        if approval is None:
            # A private ModelAdmin helper (the stock "does not exist" redirect): not in the stubs.
            redirect: HttpResponse = self._get_obj_does_not_exist_redirect(  # type: ignore[attr-defined]
                request, self.opts, object_id
            )
            return redirect
        if not self.has_view_permission(request, approval):
            raise PermissionDenied
        can_decide = self.has_decide_permission(request)
        form = None
        preview = None
        if request.method == "POST":
            if not can_decide:
                raise PermissionDenied
            form = DecisionForm(request.POST)
            if form.is_valid():
                cleaned = form.cleaned_data
                unseen = cleaned["decision"] == "release" and not cleaned["previewed"]
                if approval.is_pending and (cleaned["decision"] == "edit" or unseen):
                    # Nothing is decided yet: the IDE acts on an edit at once, so the staff
                    # member first sees what it changes, and releases what was shown (an edit
                    # changed after its preview is shown again).
                    preview = edit_preview(approval, cleaned)
                else:
                    done = self._decide_from_form(request, approval, form)
                    if done is not None:
                        return done
        elif approval.is_pending and can_decide:
            form = DecisionForm(initial={"arguments": pretty_arguments(approval.arguments)})
        if not approval.is_pending:
            form = preview = None
        request.current_app = self.admin_site.name
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Decide {approval.tool_name} ({approval.call_id})",
            "original": approval,
            "approval": approval,
            "form": form,
            "preview": preview,
            "can_decide": can_decide,
            "has_view_permission": True,
            "arguments_view": arguments_view(approval.tool_name, approval.arguments),
            "edited_view": (
                None
                if approval.edited_arguments is None
                else arguments_view(approval.tool_name, approval.edited_arguments)
            ),
            "edit_diff": edit_diff(approval),
            "conversation": conversation(approval),
            "conversation_limit": CONVERSATION_MESSAGES,
            "age": timesince(approval.created_at, approval.decided_at or timezone.now()),
            "session_link": self.session_link(approval),
            "change_url": reverse(
                "admin:approvals_approval_change",
                args=(quote(approval.pk),),
                current_app=self.admin_site.name,
            ),
            "feedback_max_chars": settings.APPROVAL_FEEDBACK_MAX_CHARS,
        }
        return TemplateResponse(request, "admin/approvals/approval/decide.html", context)

    def _decide_from_form(
        self, request: HttpRequest, approval: Approval, form: DecisionForm
    ) -> HttpResponse | None:
        """Decide as the valid form says: the redirect to the queue, or None when refused."""
        decision = form.cleaned_data["decision"]
        try:
            self.decide(
                request,
                approval,
                # Only a previewed edit gets here as one (decide_view); "edit" on a decided
                # approval gets the service's refusal, as any decision does.
                decision="edit" if decision in ("edit", "release") else decision,
                modified_arguments=form.cleaned_data["modified_arguments"],
                feedback=form.cleaned_data["feedback"],
            )
        except ApplicationError as exc:
            messages.error(request, exc.detail)
            approval.refresh_from_db()
            return None
        messages.success(
            request,
            f"{DONE[decision]} {approval.tool_name} ({approval.call_id}) in session "
            f"{approval.session_id}.",
        )
        return HttpResponseRedirect(
            reverse("admin:approvals_approval_changelist", current_app=self.admin_site.name)
        )

    # --- bulk decisions -----------------------------------------------------------------------

    @admin.action(permissions=["decide"], description="Approve selected tool calls")
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[Approval]) -> None:
        self._decide_selected(request, queryset, decision="approve")

    @admin.action(permissions=["decide"], description="Reject selected tool calls")
    def reject_selected(self, request: HttpRequest, queryset: QuerySet[Approval]) -> None:
        self._decide_selected(request, queryset, decision="reject")

    def _decide_selected(
        self, request: HttpRequest, queryset: QuerySet[Approval], *, decision: str
    ) -> None:
        # The ticked rows themselves, not the filtered list: a row decided by someone else since
        # the page loaded has left the pending queue and must be reported as skipped, not lost.
        ticked = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        if ticked and request.POST.get("select_across", "0") == "0":
            queryset = Approval.objects.filter(pk__in=ticked)
        done = 0
        skipped: list[str] = []
        for approval in queryset.order_by("created_at", "id"):
            try:
                self.decide(request, approval, decision=decision)
            except ApplicationError as exc:
                skipped.append(f"{approval.call_id}: {exc.detail}")
            else:
                done += 1
        if done:
            messages.success(request, f"{DONE[decision]} {done} tool call(s).")
        if skipped:
            messages.warning(
                request,
                f"Skipped {len(skipped)} of {done + len(skipped)} (not pending any more): "
                + "; ".join(skipped[:10]),
            )
