from __future__ import annotations

import copy
import json

import pytest

from agents import tools
from agents.registry import (
    AGENTS,
    SPECIALISTS,
    UnknownAgent,
    available_agents,
    default_agent,
    get_agent,
)

READ = {"read_file", "list_files", "search_in_code"}
HANDOFF = {"attempt_completion", "ask_followup_question", "switch_mode"}

EXPECTED_TOOLS = {
    "orchestrator": set(),
    "coder": set(tools.TOOL_NAMES),
    "architect": READ | {"write_file"} | HANDOFF,
    "debug": READ | {"execute_command"} | HANDOFF,
    "ask": READ | HANDOFF,
    "universal": set(tools.TOOL_NAMES) - {"switch_mode"},
}


def test_it_declares_every_agent_once() -> None:
    assert list(AGENTS) == ["orchestrator", "coder", "architect", "debug", "ask", "universal"]
    assert SPECIALISTS == ("coder", "architect", "debug", "ask")
    for agent_type, spec in AGENTS.items():
        assert spec.type == agent_type
        assert spec.name and spec.description and spec.prompt


@pytest.mark.parametrize(("agent_type", "expected"), EXPECTED_TOOLS.items())
def test_it_gives_each_agent_the_protocol_tools(agent_type: str, expected: set[str]) -> None:
    spec = AGENTS[agent_type]
    assert spec.tools == expected
    assert spec.allowed_tools == [name for name in tools.TOOL_NAMES if name in expected]
    for name in tools.TOOL_NAMES:
        assert spec.allows_tool(name) is (name in expected)


def test_it_restricts_only_the_architects_files() -> None:
    restricted = {t for t, spec in AGENTS.items() if spec.has_file_restrictions}
    assert restricted == {"architect"}
    (rule,) = AGENTS["architect"].file_rules
    assert rule.tools == frozenset({"write_file"})
    assert rule.allowed_globs == ("*.md",)


def test_it_routes_only_to_specialists() -> None:
    assert {t for t, spec in AGENTS.items() if spec.routable} == set(SPECIALISTS)


def test_it_matches_switch_mode_targets_to_the_specialists() -> None:
    assert tools.SWITCH_TARGETS == SPECIALISTS
    mode = tools.TOOL_SPECS["switch_mode"]["function"]["parameters"]["properties"]["mode"]
    assert mode["enum"] == list(SPECIALISTS)


@pytest.mark.parametrize("agent_type", [*SPECIALISTS, "universal"])
def test_it_writes_prompts_that_explain_finishing_and_asking(agent_type: str) -> None:
    prompt = AGENTS[agent_type].prompt
    assert "attempt_completion" in prompt
    assert "ask_followup_question" in prompt
    # Only agents that can hand off are told about switch_mode.
    assert ("switch_mode" in prompt) is (agent_type != "universal")
    for name in AGENTS[agent_type].tools:
        assert f"- {name}:" in prompt


def test_it_asks_the_orchestrator_for_json_naming_every_specialist() -> None:
    prompt = AGENTS["orchestrator"].prompt
    assert "JSON" in prompt
    for key in ('"agent"', '"confidence"', '"reasoning"', *SPECIALISTS):
        assert key in prompt


def test_it_offers_orchestrator_and_specialists_in_multi_agent_mode(settings) -> None:
    settings.MULTI_AGENT_MODE = True
    assert [spec.type for spec in available_agents()] == ["orchestrator", *SPECIALISTS]
    assert default_agent() == "orchestrator"
    assert get_agent("debug") is AGENTS["debug"]
    with pytest.raises(UnknownAgent):
        get_agent("universal")


def test_it_offers_only_universal_in_single_agent_mode(settings) -> None:
    settings.MULTI_AGENT_MODE = False
    assert [spec.type for spec in available_agents()] == ["universal"]
    assert default_agent() == "universal"
    assert get_agent("universal") is AGENTS["universal"]


@pytest.mark.parametrize("agent_type", ["orchestrator", *SPECIALISTS])
def test_it_refuses_multi_agent_agents_in_single_agent_mode(settings, agent_type: str) -> None:
    settings.MULTI_AGENT_MODE = False
    with pytest.raises(UnknownAgent, match="Available agents: universal$"):
        get_agent(agent_type)


@pytest.mark.parametrize("agent_type", ["nope", "", "Coder", " coder", None])
def test_it_raises_for_unknown_agents_listing_the_available_ones(
    settings, agent_type: object
) -> None:
    settings.MULTI_AGENT_MODE = True
    with pytest.raises(UnknownAgent) as excinfo:
        get_agent(agent_type)  # type: ignore[arg-type]
    assert str(excinfo.value) == (
        f'Unknown agent "{agent_type}". '
        "Available agents: orchestrator, coder, architect, debug, ask"
    )
    assert isinstance(excinfo.value, ValueError)
    assert excinfo.value.available == ["orchestrator", *SPECIALISTS]


def test_it_keeps_specs_immutable() -> None:
    with pytest.raises(AttributeError):
        AGENTS["ask"].tools = frozenset({"write_file"})  # type: ignore[misc]


class TestToolSpecs:
    def test_it_declares_a_spec_for_every_tool_name(self) -> None:
        assert set(tools.TOOL_SPECS) == set(tools.TOOL_NAMES)
        assert len(tools.TOOL_NAMES) == 9
        assert tools.READ_ONLY_TOOLS | tools.CONTROL_TOOLS | tools.RUNTIME_TOOLS <= set(
            tools.TOOL_NAMES
        )

    @pytest.mark.parametrize("name", tools.TOOL_NAMES)
    def test_it_builds_valid_openai_tool_entries(self, name: str) -> None:
        spec = tools.TOOL_SPECS[name]
        assert spec["type"] == "function"
        function = spec["function"]
        assert function["name"] == name
        assert len(function["description"]) > 20
        params = function["parameters"]
        assert params["type"] == "object"
        assert params["additionalProperties"] is False
        assert params["required"], "every tool has at least one required parameter"
        assert set(params["required"]) <= set(params["properties"])
        for prop in params["properties"].values():
            assert prop["type"] in {"string", "integer", "boolean"}
            assert prop["description"]

    @pytest.mark.parametrize(
        ("name", "required", "optional"),
        [
            ("read_file", {"path"}, {"encoding", "start_line", "end_line"}),
            ("write_file", {"path", "content"}, {"encoding", "create_dirs", "backup"}),
            ("list_files", {"path"}, {"recursive", "include_hidden", "pattern"}),
            ("create_directory", {"path"}, {"recursive"}),
            ("execute_command", {"command"}, {"cwd", "timeout", "shell"}),
            (
                "search_in_code",
                {"query"},
                {"path", "file_pattern", "case_sensitive", "regex", "max_results"},
            ),
            ("attempt_completion", {"result"}, set()),
            ("ask_followup_question", {"question"}, set()),
            ("switch_mode", {"mode"}, {"reason"}),
        ],
    )
    def test_it_matches_the_protocol_parameters(
        self, name: str, required: set[str], optional: set[str]
    ) -> None:
        params = tools.TOOL_SPECS[name]["function"]["parameters"]
        assert set(params["required"]) == required
        assert set(params["properties"]) == required | optional

    def test_it_returns_specs_in_tool_name_order_and_skips_unknown_names(self) -> None:
        specs = tools.tool_specs(["switch_mode", "read_file", "bogus", "read_file"])
        assert [s["function"]["name"] for s in specs] == ["read_file", "switch_mode"]
        assert tools.tool_specs([]) == []

    def test_no_request_can_change_the_tools_of_another(self) -> None:
        (spec,) = tools.tool_specs(["read_file"])
        with pytest.raises(TypeError):
            spec["function"]["name"] = "changed"
        with pytest.raises(TypeError):
            spec["function"]["parameters"]["properties"].pop("path")
        assert tools.TOOL_SPECS["read_file"]["function"]["name"] == "read_file"
        (again,) = tools.tool_specs(["read_file"])
        assert again["function"]["name"] == "read_file"
        assert json.loads(json.dumps(again)) == tools.TOOL_SPECS["read_file"]
        mine = copy.deepcopy(again)  # a copy may change
        mine["function"]["name"] = "mine"
        assert tools.tool_specs(["read_file"])[0]["function"]["name"] == "read_file"
