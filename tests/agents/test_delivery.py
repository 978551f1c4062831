"""A turn's chunks reach the session's group only while someone listens (agents.turns.Audience),
on the real Redis channel layer and on the in-memory one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.layers import channel_layers, get_channel_layer

from agents import turns
from agents.chunks import token_chunk
from tests.services import require_redis

SESSION = "delivery-1"


@pytest.fixture(params=["redis", "memory"])
def layer(request: Any, settings: Any) -> Any:
    if request.param == "redis":
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [require_redis()], "prefix": "agent-runtime-test-delivery"},
            }
        }
    else:
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    channel_layers.backends.clear()
    yield get_channel_layer()
    channel_layers.backends.clear()


@pytest.fixture
def sends(layer: Any) -> list[dict[str, Any]]:
    """Every group_send the layer is asked for (the layer itself still does the work)."""
    seen: list[dict[str, Any]] = []
    real = layer.group_send

    async def counting(group: str, message: dict[str, Any]) -> None:
        seen.append(message)
        await real(group, message)

    layer.group_send = counting
    return seen


async def _deliver(texts: list[str], listener: asyncio.Queue[Any] | None = None) -> None:
    delivery = turns.Delivery(SESSION, listener)
    for text in texts:
        await delivery.emit(token_chunk(text))
        await asyncio.sleep(0)  # let the sender task run between chunks, as a real stream does
    await delivery.flush()


async def _drain(layer: Any, channel: str) -> str:
    text = ""
    while True:
        try:
            async with asyncio.timeout(0.5):
                event = await layer.receive(channel)
        except TimeoutError:
            return text
        text += event["chunk"]["token"]


async def test_it_sends_nothing_to_a_group_nobody_listens_to(layer, sends):
    caller: asyncio.Queue[Any] = asyncio.Queue()

    await _deliver(["a", "b", "c"], caller)

    assert sends == []
    assert [caller.get_nowait()["token"] for _ in range(3)] == ["a", "b", "c"]


async def test_it_sends_every_chunk_to_a_listener_that_joined_before(layer, sends):
    channel = await layer.new_channel()
    await layer.group_add(turns.group_name(SESSION), channel)
    try:
        await _deliver(["a", "b", "c"])
        assert await _drain(layer, channel) == "abc"
        assert sends
    finally:
        await layer.group_discard(turns.group_name(SESSION), channel)


async def test_a_listener_joining_mid_turn_gets_the_rest(layer, sends, monkeypatch):
    monkeypatch.setattr(turns, "PRESENCE_SECONDS", 0.0)  # counted at every burst
    channel = await layer.new_channel()
    delivery = turns.Delivery(SESSION, None)
    await delivery.emit(token_chunk("unheard "))
    await asyncio.sleep(0.05)
    await layer.group_add(turns.group_name(SESSION), channel)
    try:
        await delivery.emit(token_chunk("heard"))
        await delivery.flush()
        assert await _drain(layer, channel) == "heard"
    finally:
        await layer.group_discard(turns.group_name(SESSION), channel)
