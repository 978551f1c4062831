"""Choosing a specialist: parsing the orchestrator LLM's answer, and the keyword fallback.

The keyword router runs when the classification call fails or the breaker is open, so it must
be instant and never raise. It only ever returns one of ``SPECIALISTS``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from agents.registry import AGENTS, SPECIALISTS


@dataclass(frozen=True)
class Route:
    agent: str
    confidence: float
    reasoning: str


# The orchestrator's prompt is the classification prompt (declared with the agent).
CLASSIFIER_PROMPT: str = AGENTS["orchestrator"].prompt

# When nothing matches, or the top score is tied, the coder gets the request: it can use every
# tool and can still hand off with switch_mode, which makes it the safe default in a coding IDE.
DEFAULT_AGENT = "coder"
# Keyword routing is a guess; keep its confidence below what a working classifier reports.
MAX_KEYWORD_CONFIDENCE = 0.6
MIN_KEYWORD_CONFIDENCE = 0.3
NO_MATCH_CONFIDENCE = 0.2
MAX_REASONING_CHARS = 500

# (regex, weight) per agent. Every pattern is wrapped in \b...\b, so "fixture" never matches
# "fix" and "address" never matches "add". Inflections are spelled out for the same reason.
_KEYWORDS: dict[str, tuple[tuple[str, float], ...]] = {
    "debug": (
        (r"traceback|stack ?trace|segfault|core dump(?:ed)?", 3.0),
        (r"exceptions?|crash(?:es|ed|ing)?|debug(?:s|ged|ging)?", 2.5),
        (r"bugs?|buggy|fix(?:es|ed|ing)?|broken|failing|fails|failed|failures?", 2.0),
        (r"not working|doesn'?t work|does not work|stopped working|hangs?|freezes", 2.0),
        (r"errors?|regressions?|wrong output|unexpected(?:ly)?|throws|panics?", 1.5),
        (r"why does|why is|why do", 1.0),
    ),
    "architect": (
        (r"architecture|architectural|refactor(?:ing)? plan|design doc(?:ument)?s?", 3.0),
        (r"design(?:s|ed|ing)?|diagrams?|roadmap|trade-?offs?|adr", 2.0),
        (r"plan(?:s|ned|ning)?|structure|specification|spec|high[- ]level|overview", 1.5),
        (r"documentation|docs|readme", 2.5),
        (r"document(?:s|ed|ing)?|markdown", 1.5),
        (r"scal(?:e|ability|able)|modules?|layers?|components?", 0.5),
    ),
    "ask": (
        (r"explain(?:s|ed|ing)?|how does|how do(?:es)? (?:i|you|we)|what does|what is", 2.5),
        (r"what'?s the difference|difference between|tell me|describe|understand", 2.0),
        (r"questions?|meaning|what|why|how|where|which|who|when", 1.0),
    ),
    "coder": (
        (r"implement(?:s|ed|ing|ation)?|refactor(?:s|ed|ing)?|(?:re)?writ(?:e|es|ing)", 2.0),
        (r"add(?:s|ed|ing)?|create|creating|build|building|generate|rename", 2.0),
        (r"code|functions?|class(?:es)?|methods?|endpoints?|features?|tests?|scripts?", 1.0),
        (r"update|change|modify|edit|replace|remove|delete|migrate|convert|optimi[sz]e", 1.0),
    ),
}
_COMPILED = {
    agent: tuple((re.compile(rf"\b(?:{pattern})\b", re.IGNORECASE), w) for pattern, w in rules)
    for agent, rules in _KEYWORDS.items()
}
# A trailing question mark hints at a question, weakly: "Why does this crash?" is still debug.
_QUESTION_MARK_WEIGHT = 0.5


def route_by_keywords(text: str) -> Route:
    """Score each specialist by weighted keyword matches; highest wins, ties go to the coder."""
    text = text or ""
    scores: dict[str, float] = dict.fromkeys(SPECIALISTS, 0.0)
    matched: dict[str, list[str]] = {agent: [] for agent in SPECIALISTS}
    for agent, rules in _COMPILED.items():
        for regex, weight in rules:
            for match in regex.finditer(text):
                scores[agent] += weight
                word = match.group(0).lower()
                if word not in matched[agent]:
                    matched[agent].append(word)
    if text.rstrip().endswith("?"):
        scores["ask"] += _QUESTION_MARK_WEIGHT
        matched["ask"].append("?")

    best = max(scores.values())
    if best == 0:
        return Route(
            agent=DEFAULT_AGENT,
            confidence=NO_MATCH_CONFIDENCE,
            reasoning=f"No routing keywords matched; defaulting to {DEFAULT_AGENT}.",
        )
    leaders = [agent for agent in SPECIALISTS if scores[agent] == best]
    if len(leaders) > 1:
        return Route(
            agent=DEFAULT_AGENT,
            confidence=MIN_KEYWORD_CONFIDENCE,
            reasoning=(
                f"Keyword scores tied between {', '.join(leaders)}; defaulting to {DEFAULT_AGENT}."
            ),
        )
    agent = leaders[0]
    runner_up = max(score for other, score in scores.items() if other != agent)
    # Confidence grows with the winning margin and with how much evidence there is.
    margin = (best - runner_up) / best
    evidence = min(best, 4.0) / 4.0
    confidence = MIN_KEYWORD_CONFIDENCE + (
        (MAX_KEYWORD_CONFIDENCE - MIN_KEYWORD_CONFIDENCE) * margin * evidence
    )
    words = ", ".join(f'"{w}"' for w in matched[agent][:5])
    return Route(
        agent=agent,
        confidence=round(confidence, 2),
        reasoning=f"Keyword routing matched {words} for {agent}.",
    )


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def _first_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in the text: inside a ``` fence if any, else anywhere in prose."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        start = candidate.find("{")
        while start != -1:
            try:
                value, _ = decoder.raw_decode(candidate, start)
            except ValueError:
                value = None
            if isinstance(value, dict):
                return value
            start = candidate.find("{", start + 1)
    return None


def _confidence(value: object) -> float:
    """Clamp to [0, 1]; anything that is not a finite number falls back to 0.5."""
    if isinstance(value, bool):
        return 0.5
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return 0.5
    if not isinstance(value, int | float) or not math.isfinite(value):
        return 0.5
    return min(1.0, max(0.0, float(value)))


def parse_classification(text: str) -> Route:
    """Parse the orchestrator's ``{"agent", "confidence", "reasoning"}`` answer.

    Raises ValueError (English text) when there is no JSON object or the agent is not a
    specialist; the caller then falls back to ``route_by_keywords``.
    """
    data = _first_json_object(text or "")
    if data is None:
        raise ValueError("The classifier's answer does not contain a JSON object.")
    agent = data.get("agent", data.get("agent_type"))
    if not isinstance(agent, str) or not agent.strip():
        raise ValueError('The classifier\'s answer has no "agent" string.')
    agent = agent.strip().lower()
    if agent not in SPECIALISTS:
        raise ValueError(
            f'The classifier chose "{agent}", which is not a specialist agent. '
            f"Expected one of: {', '.join(SPECIALISTS)}."
        )
    reasoning = data.get("reasoning")
    reasoning = reasoning.strip() if isinstance(reasoning, str) else ""
    return Route(
        agent=agent,
        confidence=_confidence(data.get("confidence")),
        reasoning=reasoning[:MAX_REASONING_CHARS],
    )
