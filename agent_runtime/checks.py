"""Configuration checks: refuse to run in production on development secrets."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, register

from agents.policy import normalise_root

MIN_API_KEY_CHARS = 32
TOOL_CHOICES = ("auto", "required", "none", "omit")


# A deployment check (`manage.py check --deploy`), so that migrate or createsuperuser work in a
# fresh checkout; serving is refused outright by agent_runtime/asgi.py, which runs it itself.
@register(Tags.security, deploy=True)
def check_secrets(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    if settings.DEBUG:
        return []
    errors = []
    if settings.SECRET_KEY == settings.DEFAULT_SECRET_KEY:
        errors.append(
            Error(
                "DJANGO_SECRET_KEY is the built-in development default while DEBUG is off.",
                hint="Set DJANGO_SECRET_KEY to a long random value, or DEBUG=true for development.",
                id="agent_runtime.E001",
            )
        )
    if settings.INTERNAL_API_KEY == settings.DEFAULT_INTERNAL_API_KEY:
        errors.append(
            Error(
                "INTERNAL_API_KEY is the built-in development default while DEBUG is off.",
                hint="Set INTERNAL_API_KEY to the key the Gateway and IDEs send.",
                id="agent_runtime.E002",
            )
        )
    if not settings.INTERNAL_API_KEY:
        errors.append(Error("INTERNAL_API_KEY is empty.", id="agent_runtime.E003"))
    elif (
        settings.INTERNAL_API_KEY != settings.DEFAULT_INTERNAL_API_KEY
        and len(settings.INTERNAL_API_KEY) < MIN_API_KEY_CHARS
    ):
        # The key is the only thing between the network and every session: make it unguessable.
        # The message never shows the key, not even its length.
        errors.append(
            Error(
                f"INTERNAL_API_KEY is shorter than {MIN_API_KEY_CHARS} characters "
                "while DEBUG is off.",
                hint="Set INTERNAL_API_KEY to a long random value, for example the output of "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'.",
                id="agent_runtime.E004",
            )
        )
    return errors


@register(Tags.compatibility)
def check_limits(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    errors = []
    if settings.MAX_REQUEST_BYTES < 1024:
        errors.append(Error("MAX_REQUEST_BYTES must be at least 1024.", id="agent_runtime.E010"))
    if settings.LLM_BASE_URL and not settings.LLM_BASE_URL.startswith(("http://", "https://")):
        errors.append(
            Error(
                "LLM_BASE_URL must start with http:// or https:// "
                f"(got {settings.LLM_BASE_URL!r}).",
                id="agent_runtime.E012",
            )
        )
    if settings.STREAM_MODE not in ("token", "message"):
        errors.append(
            Error(
                f"STREAM_MODE must be token or message (got {settings.STREAM_MODE!r}).",
                id="agent_runtime.E014",
            )
        )
    if settings.WORKSPACE_ROOT and normalise_root(settings.WORKSPACE_ROOT) is None:
        errors.append(
            Error(
                f"WORKSPACE_ROOT must be an absolute path (got {settings.WORKSPACE_ROOT!r}).",
                hint="For example /home/me/project or C:\\Users\\me\\project; unset, only "
                "relative paths pass the agents' file rules.",
                id="agent_runtime.E013",
            )
        )
    if settings.LLM_TOOL_CHOICE not in TOOL_CHOICES:
        errors.append(
            Error(
                f"LLM_TOOL_CHOICE must be one of {', '.join(TOOL_CHOICES)} "
                f"(got {settings.LLM_TOOL_CHOICE!r}).",
                hint="auto suits OpenAI, vLLM and Ollama; llama.cpp's function calling needs "
                "a tool_choice to be sent at all (auto or required).",
                id="agent_runtime.E015",
            )
        )
    if not 0 <= settings.LLM_ANSWER_RESERVE_TOKENS < settings.LLM_CONTEXT_TOKENS:
        errors.append(
            Error(
                "LLM_CONTEXT_TOKENS must be positive and larger than LLM_ANSWER_RESERVE_TOKENS "
                f"(got {settings.LLM_CONTEXT_TOKENS} and {settings.LLM_ANSWER_RESERVE_TOKENS}).",
                hint="LLM_CONTEXT_TOKENS is the model's window (llama.cpp's --ctx-size, "
                "Ollama's num_ctx, vLLM's --max-model-len).",
                id="agent_runtime.E016",
            )
        )
    if not 0 < settings.KEEPALIVE_SECONDS <= 15:
        errors.append(
            Error(
                "KEEPALIVE_SECONDS must be in (0, 15]: the Gateway drops silent streams.",
                id="agent_runtime.E011",
            )
        )
    return errors
