"""JSON from clients, decoded one way everywhere (REST, the stream endpoint, WebSocket frames).

Malformed or too deeply nested input is a ValueError with an English message (never a 500),
and lone UTF-16 surrogates, which JSON can spell ("\\ud83d") but no database can store, become
U+FFFD: an IDE that cut a file inside an emoji must not make its tool result unstorable. So does
NUL ("\\u0000", a binary file read as text): PostgreSQL's text and jsonb refuse it, which made
such a message, tool result or title a 500 there (found while fuzzing the API).
"""

from __future__ import annotations

import json
import re
from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


def loads(raw: bytes | str) -> Any:
    try:
        return clean_text(json.loads(raw))
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None


def clean_text(value: Any) -> Any:
    if isinstance(value, str):
        return _clean_str(value)
    if isinstance(value, list):
        return [clean_text(item) for item in value]
    if isinstance(value, dict):
        return {_clean_str(key): clean_text(item) for key, item in value.items()}
    return value


# json.loads has already joined valid surrogate pairs: any surrogate left stands alone.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _clean_str(text: str) -> str:
    if text.isascii() and "\x00" not in text:
        return text
    return _UNSTORABLE.sub("\ufffd", text)


class SafeJSONParser(JSONParser):
    """DRF's JSON parser, through loads(): too-deep bodies are a 400, surrogates are cleaned."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return loads(stream.read())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None


class AnyJSONParser(SafeJSONParser):
    """Bodies are JSON whatever their Content-Type says: ``curl -d`` sends form-encoded by
    default, and a 415 helps nobody when the body is plain JSON."""

    media_type = "*/*"
