"""The agents endpoints of PROTOCOL §2."""

from __future__ import annotations

import pytest

from agents.models import AgentContext, AgentSwitch

pytestmark = pytest.mark.django_db


def test_it_lists_the_agents(api):
    data = api.get("/agents").json()
    types = [a["type"] for a in data["agents"]]
    assert set(types) == {"orchestrator", "coder", "architect", "debug", "ask"}
    assert data["total"] == 5
    architect = next(a for a in data["agents"] if a["type"] == "architect")
    assert list(architect) == [
        "type", "name", "description", "allowed_tools", "has_file_restrictions",
    ]  # fmt: skip
    assert architect["has_file_restrictions"] is True
    assert "write_file" in architect["allowed_tools"]
    assert "execute_command" not in architect["allowed_tools"]


def test_it_lists_only_universal_in_single_agent_mode(api, settings):
    settings.MULTI_AGENT_MODE = False
    data = api.get("/agents").json()
    assert [a["type"] for a in data["agents"]] == ["universal"]


def test_it_shows_the_current_agent(api, make_session):
    make_session("c")
    context = api.get("/agents/c/current").json()["context"]
    assert list(context) == [
        "id", "session_id", "current_agent", "switch_count", "switch_history",
        "last_switch_at", "created_at",
    ]  # fmt: skip
    assert context["current_agent"] == "orchestrator"
    assert context["switch_history"] is None
    assert context["last_switch_at"] is None
    with_history = api.get("/agents/c/current?include_history=true").json()["context"]
    assert with_history["switch_history"] == []


def test_it_switches_explicitly(api, make_session):
    make_session("c")
    response = api.post(
        "/agents/c/switch",
        {"target_agent": "debug", "reason": "r", "confidence": 0.7},
        format="json",
    )
    assert response.status_code == 200
    context = response.json()["context"]
    assert context["current_agent"] == "debug"
    assert context["switch_count"] == 1
    (entry,) = context["switch_history"]
    assert list(entry) == ["from_agent", "to_agent", "reason", "confidence", "switched_at", "score"]
    assert entry["confidence"] == "medium" and entry["score"] == 0.7
    assert AgentContext.objects.get(session_id="c").current_agent == "debug"


def test_an_explicit_switch_is_user_requested_and_sure(api, make_session):
    make_session("c")
    api.post("/agents/c/switch", {"target_agent": "debug"}, format="json")
    api.post("/agents/c/switch", {"target_agent": "ask", "confidence": "low"}, format="json")
    api.post("/agents/c/switch", {"target_agent": "coder", "confidence": None}, format="json")
    history = api.get("/agents/c/current?include_history=true").json()["context"]
    assert [(s["reason"], s["confidence"], s["score"]) for s in history["switch_history"]] == [
        ("User requested", "high", None),
        ("User requested", "low", None),  # the original's form of the field
        ("User requested", "high", None),
    ]


@pytest.mark.parametrize(
    "payload",
    [
        {"target_agent": "wizard"},
        {"target_agent": "universal"},  # not registered in multi-agent mode
        {},
        {"target_agent": "coder", "confidence": 2},
        {"target_agent": "coder", "confidence": -0.1},
        {"target_agent": "coder", "confidence": "sure"},
        {"target_agent": "coder", "confidence": "HIGH"},
        {"target_agent": "coder", "confidence": "0.9"},
        {"target_agent": "coder", "confidence": True},
        {"target_agent": "coder", "extra": True},
    ],
)
def test_it_refuses_bad_switches(api, make_session, payload):
    make_session("c")
    response = api.post("/agents/c/switch", payload, format="json")
    assert response.status_code == 400
    assert response.json()["detail"]
    assert AgentContext.objects.get(session_id="c").current_agent == "orchestrator"
    assert not AgentSwitch.objects.exists()


def test_it_answers_404_for_switching_an_unknown_session(api):
    response = api.post("/agents/nope/switch", {"target_agent": "coder"}, format="json")
    assert response.status_code == 404


def test_it_caps_switches(api, make_session, settings):
    settings.MAX_AGENT_SWITCHES = 2
    make_session("c")
    for target in ["coder", "debug"]:
        assert (
            api.post("/agents/c/switch", {"target_agent": target}, format="json").status_code == 200
        )
    response = api.post("/agents/c/switch", {"target_agent": "ask"}, format="json")
    assert response.status_code == 409
    assert "limit" in response.json()["detail"]
    assert AgentContext.objects.get(session_id="c").current_agent == "debug"
