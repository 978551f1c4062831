from __future__ import annotations

import pytest

from agents.registry import AGENTS, SPECIALISTS
from agents.routing import CLASSIFIER_PROMPT, Route, parse_classification, route_by_keywords


@pytest.mark.parametrize(
    ("text", "agent"),
    [
        ("I get a traceback when I start the server", "debug"),
        ("Fix the failing login test", "debug"),
        ("Why does this crash?", "debug"),
        ("The app throws an exception on save", "debug"),
        ("Design the architecture for the payments service", "architect"),
        ("Write the docs for the public API", "architect"),
        ("Draw a diagram of the module structure", "architect"),
        ("Explain how the cache works", "ask"),
        ("How does the router pick an agent?", "ask"),
        ("What does this function return?", "ask"),
        ("Write a function that parses ISO dates", "coder"),
        ("Implement a REST endpoint for users", "coder"),
        ("Add error handling to the parser", "coder"),
        ("Refactor the billing class", "coder"),
    ],
)
def test_it_routes_by_keywords(text: str, agent: str) -> None:
    route = route_by_keywords(text)
    assert route.agent == agent, route
    assert 0.0 <= route.confidence <= 0.6
    assert route.reasoning


@pytest.mark.parametrize(
    "text",
    [
        "Update the user fixture",  # "fixture" is not "fix"
        "Store the billing address",  # "address" is not "add"
        "Rename the debugger_config prefix",  # "debugger_config" is not "debug"
        "Rewrite the errorless module",  # "errorless" is not "error"
    ],
)
def test_it_matches_whole_words_only(text: str) -> None:
    assert route_by_keywords(text).agent == "coder"


def test_it_does_not_see_add_inside_address() -> None:
    route = route_by_keywords("Explain the address format")
    assert route.agent == "ask"
    assert "add" not in route.reasoning


@pytest.mark.parametrize("text", ["", "   ", "hello there", "42"])
def test_it_defaults_to_the_coder_when_nothing_matches(text: str) -> None:
    route = route_by_keywords(text)
    assert route == Route(
        agent="coder",
        confidence=route.confidence,
        reasoning="No routing keywords matched; defaulting to coder.",
    )
    assert route.confidence <= 0.3


def test_it_sends_ties_to_the_coder() -> None:
    # "bug" (debug, 2.0) vs "design" (architect, 2.0).
    route = route_by_keywords("bug design")
    assert route.agent == "coder"
    assert "tied between architect, debug" in route.reasoning


def test_it_is_more_confident_with_more_evidence() -> None:
    weak = route_by_keywords("there is an error")
    strong = route_by_keywords("traceback: exception, the app crashed, broken build")
    assert weak.agent == strong.agent == "debug"
    assert weak.confidence < strong.confidence <= 0.6


def test_it_names_the_matched_words() -> None:
    route = route_by_keywords("Traceback after the crash")
    assert route.reasoning == 'Keyword routing matched "traceback", "crash" for debug.'


def test_it_only_routes_to_specialists() -> None:
    texts = ["orchestrator", "universal mode", "switch agent", "error design what write"]
    assert {route_by_keywords(t).agent for t in texts} <= set(SPECIALISTS)


class TestParseClassification:
    def test_it_parses_a_plain_json_answer(self) -> None:
        route = parse_classification(
            '{"agent": "debug", "confidence": 0.9, "reasoning": "A crash report."}'
        )
        assert route == Route(agent="debug", confidence=0.9, reasoning="A crash report.")

    @pytest.mark.parametrize(
        "text",
        [
            '```json\n{"agent": "architect", "confidence": 0.8, "reasoning": "Design."}\n```',
            '```\n{"agent": "architect", "confidence": 0.8, "reasoning": "Design."}\n```',
            'Sure! Here it is:\n{"agent": "architect", "confidence": 0.8, "reasoning": "Design."}'
            "\nHope that helps.",
            'Thinking {not json} then {"agent": "architect", "confidence": 0.8, '
            '"reasoning": "Design."}',
            'Note ```json\n{"agent": "architect", "confidence": 0.8, "reasoning": "Design."}```'
            ' and {"agent": "coder"}',
        ],
    )
    def test_it_extracts_the_first_object_from_fences_and_prose(self, text: str) -> None:
        assert parse_classification(text) == Route("architect", 0.8, "Design.")

    def test_it_keeps_braces_inside_strings(self) -> None:
        route = parse_classification('{"agent": "ask", "reasoning": "About {curly} braces"}')
        assert route.reasoning == "About {curly} braces"

    @pytest.mark.parametrize("agent", ["CODER", " Coder ", "coder"])
    def test_it_accepts_the_agent_case_insensitively(self, agent: str) -> None:
        assert parse_classification(f'{{"agent": "{agent}"}}').agent == "coder"

    @pytest.mark.parametrize(
        ("confidence", "expected"),
        [
            ("1.7", 1.0),
            ("-0.2", 0.0),
            ("0.42", 0.42),
            ('"0.7"', 0.7),
            ("95", 1.0),
            ('"high"', 0.5),
            ("null", 0.5),
            ("true", 0.5),
            ("NaN", 0.5),
            ("[0.9]", 0.5),
        ],
    )
    def test_it_clamps_the_confidence(self, confidence: str, expected: float) -> None:
        route = parse_classification(f'{{"agent": "debug", "confidence": {confidence}}}')
        assert route.confidence == expected

    def test_it_defaults_missing_fields(self) -> None:
        assert parse_classification('{"agent": "ask"}') == Route("ask", 0.5, "")

    def test_it_truncates_runaway_reasoning(self) -> None:
        route = parse_classification('{"agent": "ask", "reasoning": "' + "x" * 5000 + '"}')
        assert len(route.reasoning) == 500

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("", "does not contain a JSON object"),
            ("I think the coder should do it.", "does not contain a JSON object"),
            ('["coder"]', "does not contain a JSON object"),
            ('{"confidence": 0.9}', 'no "agent" string'),
            ('{"agent": 3}', 'no "agent" string'),
            ('{"agent": "orchestrator"}', 'chose "orchestrator", which is not a specialist'),
            ('{"agent": "universal"}', "Expected one of: coder, architect, debug, ask."),
            ('{"agent": "tester", "confidence": 1}', 'chose "tester"'),
        ],
    )
    def test_it_rejects_answers_without_a_specialist(self, text: str, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            parse_classification(text)


def test_it_uses_the_orchestrator_prompt_for_classification() -> None:
    assert CLASSIFIER_PROMPT == AGENTS["orchestrator"].prompt
    for agent in SPECIALISTS:
        assert AGENTS[agent].description in CLASSIFIER_PROMPT
