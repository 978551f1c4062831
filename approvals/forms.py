"""The staff decision form: approve, edit (new JSON arguments) or reject (with feedback)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, cast

from django import forms
from django.conf import settings
from django.core.validators import MaxLengthValidator

from agent_runtime import jsonbody


def pretty_arguments(arguments: Any) -> str:
    return json.dumps(arguments, indent=2, ensure_ascii=False)


def arguments_digest(arguments: Any) -> str:
    """Names one set of arguments, however the JSON was spaced or its keys ordered."""
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class DecisionForm(forms.Form):
    """The decision arrives as the value of the pressed button (``name="decision"``).

    An edit is released only once its diff has been shown: "edit" asks for the diff, whose
    page carries the digest of the arguments it showed in ``previewed``, and "release" decides
    the edit. ``cleaned_data["previewed"]`` says whether the submitted arguments are still the
    ones shown (changed after the preview: show the new diff instead of releasing).
    """

    # "edit" shows what the new arguments change; "release" decides the edit that was shown.
    DECISIONS = [
        ("approve", "Approve"),
        ("edit", "Edit"),
        ("release", "Release the edit"),
        ("reject", "Reject"),
    ]

    decision = forms.ChoiceField(choices=DECISIONS)
    arguments = forms.CharField(
        required=False,
        strip=False,
        label="Arguments (JSON object, used by Edit)",
        widget=forms.Textarea(attrs={"rows": 12, "cols": 100, "spellcheck": "false"}),
    )
    feedback = forms.CharField(
        required=False,
        label="Feedback (told to the agent; optional for Approve and Edit)",
        widget=forms.Textarea(attrs={"rows": 3, "cols": 100}),
    )
    previewed = forms.CharField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Read at form creation, not import, so the setting can change (and be overridden).
        limit = settings.APPROVAL_FEEDBACK_MAX_CHARS
        feedback = cast(forms.CharField, self.fields["feedback"])
        feedback.max_length = limit
        feedback.validators.append(MaxLengthValidator(limit))
        feedback.widget.attrs["maxlength"] = str(limit)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        shown = cleaned.get("previewed") or ""
        cleaned["modified_arguments"] = None
        cleaned["edit_digest"] = ""
        cleaned["previewed"] = False
        if cleaned.get("decision") not in ("edit", "release") or "arguments" not in cleaned:
            return cleaned
        raw = cleaned["arguments"]
        if not raw.strip():
            self.add_error("arguments", "Edit needs the new arguments as a JSON object.")
            return cleaned
        try:
            value = jsonbody.loads(raw)
        except ValueError as exc:
            self.add_error("arguments", f"This is not valid JSON: {exc}.")
            return cleaned
        if not isinstance(value, dict):
            self.add_error("arguments", "The arguments must be a JSON object ({...}).")
            return cleaned
        cleaned["modified_arguments"] = value
        cleaned["edit_digest"] = arguments_digest(value)
        cleaned["previewed"] = shown == cleaned["edit_digest"]
        return cleaned
