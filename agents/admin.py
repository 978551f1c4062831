"""Read-only views of which agent each session talks to, its switches, and its tool calls."""

from __future__ import annotations

from django.contrib import admin

from agents.models import AgentContext, AgentSwitch, ToolCall
from sessions.admin import ReadOnlyModelAdmin, ReadOnlyTabularInline, pretty_json


class AgentSwitchInline(ReadOnlyTabularInline):
    model = AgentSwitch
    fields = ["switched_at", "from_agent", "to_agent", "reason", "confidence", "score"]
    readonly_fields = fields  # type: ignore[assignment]  # stubs: invariant list types
    ordering = ["switched_at", "id"]
    verbose_name_plural = "switch history"


@admin.register(AgentContext)
class AgentContextAdmin(ReadOnlyModelAdmin):
    list_display = ["session", "current_agent", "switch_count", "last_switch_at", "created_at"]
    list_select_related = ["session"]
    list_filter = ["current_agent"]
    search_fields = ["session__id", "session__title"]
    ordering = ["-created_at"]
    fields = ["session", "current_agent", "switch_count", "last_switch_at", "created_at"]
    readonly_fields = fields  # type: ignore[assignment]  # stubs: invariant list types
    inlines = [AgentSwitchInline]


@admin.register(ToolCall)
class ToolCallAdmin(ReadOnlyModelAdmin):
    list_display = [
        "session_id",
        "call_id",
        "tool_name",
        "agent",
        "status",
        "requires_approval",
        "created_at",
    ]
    list_filter = ["status", "tool_name"]
    search_fields = ["session__id", "call_id"]
    ordering = ["-created_at", "-id"]
    fields = [
        "session",
        "call_id",
        "tool_name",
        "agent",
        "status",
        "requires_approval",
        "arguments_pretty",
        "error",
        "created_at",
        "completed_at",
    ]
    readonly_fields = fields  # type: ignore[assignment]  # stubs: invariant list types

    @admin.display(description="arguments")
    def arguments_pretty(self, obj: ToolCall) -> str:
        return pretty_json(obj.arguments)
