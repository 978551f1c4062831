from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from sessions.models import AgentSession
from sessions.services import message_append, session_create


@pytest.fixture(autouse=True)
def _isolated_cache() -> Iterator[None]:
    # Rate-limit counters and locks must not leak from one test into the next.
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture
def api() -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_INTERNAL_AUTH=settings.INTERNAL_API_KEY)
    return client


@pytest.fixture
def anon() -> APIClient:
    return APIClient()


@pytest.fixture
def make_session(db: Any) -> Callable[..., AgentSession]:
    counter = iter(range(1, 10_000))

    def make(session_id: str | None = None, *, messages: int = 0, **kwargs: Any) -> AgentSession:
        session = session_create(session_id=session_id or f"s-{next(counter)}", **kwargs)
        for i in range(messages):
            message_append(
                session=session, role="user" if i % 2 == 0 else "assistant", content=f"m{i}"
            )
        session.refresh_from_db()
        return session

    return make
