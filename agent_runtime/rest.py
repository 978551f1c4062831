"""Edge helpers every app's DRF views share: strict input, the query string and the JSON body."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.request import Request

from agent_runtime.jsonbody import clean_text


class StrictCharField(serializers.CharField):
    """A string, and only a string: DRF would turn 12 into "12"."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            raise serializers.ValidationError("must be a string.")
        return super().to_internal_value(data)


class StrictSerializer(serializers.Serializer[Any]):
    """Refuses keys it does not know, so a typo is a 400 rather than silently ignored."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise serializers.ValidationError(
                {"non_field_errors": ["the body must be a JSON object."]}
            )
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {"non_field_errors": [f"unknown field(s): {', '.join(unknown)}."]}
            )
        return super().to_internal_value(data)


def query(request: Request) -> dict[str, str]:
    """The query string for an input serializer, as a plain dict.

    Given the QueryDict itself, DRF reads it as an HTML form and takes an empty value
    (``?limit=``, ``?event_type=``) for an absent one, so the schema's "an integer from 1 to
    1000" let an empty string through. As a dict, an empty value is validated like any other.
    Values are cleaned as JSON bodies are (a NUL would be a 500 on PostgreSQL).
    """
    return {key: clean_text(value) for key, value in request.query_params.dict().items()}


def body(request: Request) -> Any:
    """The JSON body; an empty body is an empty object."""
    return request.data if request.body else {}
