"""The playground's one form: a new session, optionally with the agent it starts with."""

from __future__ import annotations

from typing import Any

from django import forms

from agents.registry import available_agents
from sessions.services import TITLE_MAX_CHARS


def agent_choices() -> list[tuple[str, str]]:
    """The agents of the current mode (single-agent mode has only ``universal``)."""
    return [(spec.type, f"{spec.name} ({spec.type})") for spec in available_agents()]


class SessionForm(forms.Form):
    session_id = forms.CharField(
        required=False,
        max_length=64,
        label="Session id",
        help_text="Leave empty for a generated one.",
    )
    title = forms.CharField(required=False, max_length=TITLE_MAX_CHARS)
    agent = forms.ChoiceField(label="Start with", choices=())

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Read per form: the mode is a setting, and tests change it.
        agent = self.fields["agent"]
        assert isinstance(agent, forms.ChoiceField)
        agent.choices = agent_choices()
