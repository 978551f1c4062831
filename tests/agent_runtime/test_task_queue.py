"""django-q2's Redis keys carry the deployment's prefix, as the channel layer's and cache's do."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
import redis
from django.conf import settings

from tests.services import require_redis

# Enqueues one task the way the app does and prints how many the queue it sees then holds.
ENQUEUE = (
    "import django; django.setup()\n"
    "from django_q.brokers import get_broker\n"
    "from django_q.tasks import async_task\n"
    "async_task('math.floor', 1.5)\n"
    "print(get_broker().queue_size())\n"
)


def enqueue_in_a_deployment(redis_url: str, **env: str) -> int:
    """A fresh process (django-q2 reads Q_CLUSTER once, at import) configured by ``env``."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"Q_PREFIX", "CACHE_PREFIX", "CHANNEL_PREFIX", "Q_SYNC", "REDIS_URL"}
    }
    done = subprocess.run(
        [sys.executable, "-c", ENQUEUE],
        env={**clean, "DJANGO_SETTINGS_MODULE": "agent_runtime.settings", "REDIS_URL": redis_url}
        | env,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


@pytest.fixture
def redis_client():
    url = require_redis()
    client = redis.Redis.from_url(url)
    prefixes: list[str] = []
    yield url, client, prefixes
    for prefix in prefixes:
        for key in client.scan_iter(f"*{prefix}*"):
            client.delete(key)
    client.close()


def test_two_prefixes_use_different_queues(redis_client):
    url, client, prefixes = redis_client
    one, two = f"q-test-{uuid.uuid4().hex[:8]}", f"q-test-{uuid.uuid4().hex[:8]}"
    prefixes += [one, two]
    # The second deployment names its prefix through CACHE_PREFIX alone, which Q_PREFIX follows.
    assert enqueue_in_a_deployment(url, Q_PREFIX=one) == 1
    assert enqueue_in_a_deployment(url, CACHE_PREFIX=two) == 1  # a shared queue would hold 2
    assert enqueue_in_a_deployment(url, Q_PREFIX=one) == 2
    keys_one = {k.decode() for k in client.scan_iter(f"*{one}*")}
    keys_two = {k.decode() for k in client.scan_iter(f"*{two}*")}
    assert keys_one and keys_two
    assert not any(two in key for key in keys_one)
    assert sum(client.llen(k) for k in keys_one if client.type(k) == b"list") == 2
    assert sum(client.llen(k) for k in keys_two if client.type(k) == b"list") == 1
