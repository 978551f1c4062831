"""The turn lease's fencing, and database calls that ride out an outage (sessions.db)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.db import OperationalError, connection

from agent_runtime.errors import Conflict, NotFound
from agents.services import agent_switch
from sessions import locks
from sessions.db import DatabaseUnavailable, durable
from sessions.models import AgentSession, Message
from sessions.services import message_append


def claimed(make_session, token: str = "mine") -> locks.TurnLease:
    session = make_session("s1")
    assert locks.try_claim(session.pk, token)
    return locks.TurnLease(session_id=session.pk, token=token)


@pytest.mark.django_db
def test_it_lets_a_turn_write_while_it_holds_its_lease(make_session):
    lease = claimed(make_session)
    with locks.fenced(lease):
        message_append(session="s1", role="user", content="hi")
    assert Message.objects.filter(session_id="s1").count() == 1


# Not inside the test's own transaction: a refused append fails its caller's whole transaction
# (it takes no savepoint of its own), as a turn's writes are meant to.
@pytest.mark.django_db(transaction=True)
def test_it_refuses_every_write_of_a_turn_whose_lease_was_taken(make_session):
    lease = claimed(make_session)
    # The lease lapsed during an outage and another turn claimed it.
    AgentSession.objects.filter(pk="s1").update(turn_owner="theirs")
    with locks.fenced(lease):
        with pytest.raises(locks.LeaseLost):
            message_append(session="s1", role="assistant", content="late")
        with pytest.raises(locks.LeaseLost):
            agent_switch(session="s1", to_agent="debug")
    assert Message.objects.filter(session_id="s1").count() == 0
    assert AgentSession.objects.get(pk="s1").agent_context.current_agent != "debug"
    # Outside a turn (REST, admin) nothing is fenced.
    message_append(session="s1", role="user", content="from elsewhere")
    assert Message.objects.filter(session_id="s1").count() == 1


@pytest.mark.django_db
def test_a_cancelled_turn_may_still_record_what_it_streamed(make_session):
    lease = claimed(make_session)
    assert locks.revoke("s1")  # the tombstone keeps every other turn out until it releases
    assert AgentSession.objects.get(pk="s1").turn_owner == "revoked:mine"
    with locks.fenced(lease):
        message_append(session="s1", role="assistant", content="partial")
    locks.release(lease)
    assert AgentSession.objects.get(pk="s1").turn_owner == ""


@pytest.mark.django_db
def test_a_retried_claim_may_take_its_own_lease_again(make_session):
    claimed(make_session)
    assert locks.try_claim("s1", "mine")  # the first try went through before its error
    assert not locks.try_claim("s1", "someone-else")


class Flaky:
    """A database step that fails ``failures`` times, as during an outage, then works."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self, *, value: str) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise OperationalError("server closed the connection unexpectedly")
        return value


@pytest.mark.django_db(transaction=True)  # the wrapper closes stale connections around calls
async def test_durable_retries_through_a_short_outage(settings, caplog):
    settings.DB_RETRY_SECONDS = 5
    step = Flaky(failures=3)
    assert await durable("save the reply", step, value="kept") == "kept"
    assert step.calls == 4
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 3 and all(r.levelname == "WARNING" for r in retries)


@pytest.mark.django_db(transaction=True)
async def test_durable_gives_up_with_a_503_the_client_can_read(settings, caplog):
    settings.DB_RETRY_SECONDS = 0.3
    step = Flaky(failures=1000)
    started = asyncio.get_running_loop().time()
    with pytest.raises(DatabaseUnavailable) as info:
        await durable("save the reply", step, value="lost")
    assert asyncio.get_running_loop().time() - started < 2
    assert info.value.status == 503 and info.value.code == "database_unavailable"
    assert "could not save the reply" in info.value.detail
    assert any(r.levelname == "ERROR" for r in caplog.records)


@pytest.mark.django_db(transaction=True)
def test_a_claim_whose_work_fails_leaves_neither_the_claim_nor_its_writes(make_session):
    make_session("s1")

    def accept_then_refuse() -> None:
        message_append(session="s1", role="user", content="hi")
        raise Conflict("refused half-way")

    with pytest.raises(Conflict):
        asyncio.run(locks.acquire("s1", wait=False, then=accept_then_refuse))
    row = AgentSession.objects.get(pk="s1")
    assert (row.turn_owner, row.message_count) == ("", 0)
    assert not Message.objects.filter(session_id="s1").exists()
    lease, answer = asyncio.run(locks.acquire("s1", wait=False, then=lambda: "claimed"))
    assert answer == "claimed"
    assert AgentSession.objects.get(pk="s1").turn_owner == lease.token


@pytest.mark.django_db(transaction=True)
def test_a_claim_of_a_missing_session_is_a_404():
    with pytest.raises(NotFound):
        asyncio.run(locks.acquire("nope", wait=False, then=lambda: None))


@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_each_take_their_own_seq(make_session):
    """Real concurrency: eight threads, eight connections, one session; the counter's UPDATE
    ... RETURNING serialises them on the row's lock."""
    if connection.vendor != "postgresql":
        pytest.skip("runs in the PostgreSQL pass (SQLite's in-memory test database locks tables)")
    make_session("s1")
    writers, each = 8, 10
    barrier = threading.Barrier(writers)

    def writer(n: int) -> None:
        barrier.wait()
        try:
            for i in range(each):
                message_append(session="s1", role="user", content=f"w{n}-{i}")
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    seqs = sorted(Message.objects.filter(session_id="s1").values_list("seq", flat=True))
    assert seqs == list(range(1, writers * each + 1))
    session = AgentSession.objects.get(pk="s1")
    assert session.message_count == writers * each
    assert session.title.startswith("w")  # the first message's, set once


@pytest.mark.django_db
def test_the_first_user_message_titles_an_untitled_session_once(make_session):
    make_session("s1")
    message_append(session="s1", role="assistant", content="no title from me")
    message_append(session="s1", role="user", content="  fix\nthe   build ")
    message_append(session="s1", role="user", content="second question")
    assert AgentSession.objects.get(pk="s1").title == "fix the build"
    make_session("s2", title="chosen")
    message_append(session="s2", role="user", content="first question")
    assert AgentSession.objects.get(pk="s2").title == "chosen"
