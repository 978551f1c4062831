"""The staff console's read-only views of sessions, their history, the audit log and LLM usage.

Everything here is a record of what happened: staff look, nobody edits. Changes go through
the API and the services, so the admin never bypasses their invariants.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.text import Truncator

from sessions.models import AgentSession, AuditEvent, LLMRequest, Message

admin.site.site_header = "agent-runtime staff console"
admin.site.site_title = "agent-runtime staff console"
admin.site.index_title = "agent-runtime staff console"

# The session page shows only the latest messages: a long session must not make it unusable.
INLINE_MESSAGES = 200
SHORT_CONTENT_CHARS = 120


class ReadOnlyAdminMixin:
    """No add, change or delete for anyone; the change view stays viewable, read-only."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyModelAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    pass


class ReadOnlyTabularInline(ReadOnlyAdminMixin, admin.TabularInline):  # type: ignore[type-arg]
    extra = 0
    can_delete = False
    show_change_link = False


def pretty_json(value: Any) -> str:
    """Indented JSON in a <pre>, for read-only JSON fields."""
    if value is None:
        return "-"
    return format_html(
        '<pre class="json">{}</pre>', json.dumps(value, indent=2, ensure_ascii=False)
    )


def short(text: str, chars: int = SHORT_CONTENT_CHARS) -> str:
    return Truncator(" ".join((text or "").split())).chars(chars)


class DeletedFilter(admin.SimpleListFilter):
    title = "deleted"
    parameter_name = "deleted"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.filter(deleted_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(deleted_at__isnull=True)
        return queryset


class RecentMessagesFormSet(BaseInlineFormSet):  # type: ignore[type-arg]
    """The session's latest INLINE_MESSAGES messages (seq runs 1..message_count)."""

    def get_queryset(self) -> QuerySet[Message]:
        if not hasattr(self, "_recent"):
            first = max(0, self.instance.message_count - INLINE_MESSAGES)
            self._recent = super().get_queryset().filter(seq__gt=first).order_by("seq")
        return self._recent


class MessageInline(ReadOnlyTabularInline):
    model = Message
    formset = RecentMessagesFormSet
    fields = ["seq", "role", "agent", "short_content", "tool_call_id", "created_at"]
    readonly_fields = fields  # type: ignore[assignment]  # stubs: invariant list types
    ordering = ["seq"]
    classes = ["collapse"]
    verbose_name_plural = f"messages (the latest {INLINE_MESSAGES})"

    @admin.display(description="content")
    def short_content(self, obj: Message) -> str:
        text = short(obj.content)
        if obj.tool_calls:
            names = ", ".join(
                str((call.get("function") or {}).get("name", "?"))
                for call in obj.tool_calls
                if isinstance(call, dict)
            )
            text = f"{text} [tool calls: {names}]".strip()
        return text


@admin.register(AgentSession)
class AgentSessionAdmin(ReadOnlyModelAdmin):
    list_display = [
        "id",
        "title",
        "current_agent",
        "message_count",
        "is_active",
        "last_activity",
        "deleted",
    ]
    list_select_related = ["agent_context"]
    list_filter = ["is_active", DeletedFilter]
    search_fields = ["id", "title"]
    ordering = ["-last_activity"]
    inlines = [MessageInline]
    fields = [
        "id",
        "title",
        "description",
        "current_agent",
        "is_active",
        "message_count",
        "created_at",
        "last_activity",
        "deleted_at",
        "turn_owner",
        "turn_expires_at",
    ]
    readonly_fields = fields  # type: ignore[assignment]  # stubs: invariant list types

    def get_queryset(self, request: HttpRequest) -> QuerySet[AgentSession]:
        return super().get_queryset(request).select_related("agent_context")

    @admin.display(description="current agent", ordering="agent_context__current_agent")
    def current_agent(self, obj: AgentSession) -> str:
        try:
            return obj.agent_context.current_agent
        except AgentSession.agent_context.RelatedObjectDoesNotExist:
            return "-"

    @admin.display(description="deleted", boolean=True, ordering="deleted_at")
    def deleted(self, obj: AgentSession) -> bool:
        return obj.deleted_at is not None


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyModelAdmin):
    list_display = ["event_type", "session_id", "agent", "timestamp"]
    list_filter = ["event_type"]
    search_fields = ["session_id"]
    fields = [
        "event_id",
        "event_type",
        "timestamp",
        "session_id",
        "correlation_id",
        "agent",
        "data_pretty",
    ]
    readonly_fields = fields  # type: ignore[assignment]  # stubs: invariant list types

    @admin.display(description="data")
    def data_pretty(self, obj: AuditEvent) -> str:
        return pretty_json(obj.data)


@admin.register(LLMRequest)
class LLMRequestAdmin(ReadOnlyModelAdmin):
    list_display = [
        "session_id",
        "agent",
        "purpose",
        "provider",
        "model",
        "started_at",
        "duration_ms",
        "success",
        "prompt_tokens",
        "completion_tokens",
        "finish_reason",
    ]
    list_filter = ["success", "purpose", "provider", "finish_reason"]
    search_fields = ["session_id"]
    ordering = ["-started_at", "-id"]
