"""The Redis cache (REDIS_URL): shared rate-limit counters and the health check, on real Redis."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import caches

from agents.models import AgentContext
from sessions.services import session_create
from tests import fakellm
from tests.services import require_redis

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def redis_cache(settings: Any) -> Any:
    url = require_redis()
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": "agent-runtime-test",
        }
    }
    # Django's setting_changed handler rebuilds the cache handlers from the new setting.
    caches["default"].clear()
    yield caches["default"]
    caches["default"].clear()


async def test_rate_limits_count_in_redis(stream, llm, settings, redis_cache):
    import redis

    settings.RATE_LIMIT_MESSAGES = "2/m"
    await sync_to_async(session_create)(session_id="r1")
    await sync_to_async(AgentContext.objects.filter(session_id="r1").update)(current_agent="coder")
    llm.enqueue(fakellm.text("one"), fakellm.text("two"))
    for _ in range(2):
        await stream.send("r1", {"type": "user_message", "content": "hi"})
    limited = await stream.refused("r1", {"type": "user_message", "content": "hi"})
    assert limited["metadata"]["status"] == 429
    # The counter lives in Redis, where every daphne process sees it.
    client = redis.Redis.from_url(require_redis())
    assert any(b"agent-runtime-test" in key for key in client.keys("*"))


def test_health_reports_the_redis_cache(anon, redis_cache):
    data = anon.get("/health").json()
    assert data["checks"]["cache"] == {
        "status": "ok",
        "backend": "RedisCache",
        "latency_ms": data["checks"]["cache"]["latency_ms"],
    }
