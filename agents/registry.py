"""Agent declarations: who exists, which tools each may use, and their system prompts.

Each agent is a frozen ``AgentSpec`` value, not a class: the runtime's behaviour is the same for
every agent and only this data differs (PROTOCOL §5). Importable without Django being set up;
settings are read lazily inside the functions that need them.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.tools import CONTROL_TOOLS, READ_ONLY_TOOLS, RUNTIME_TOOLS, TOOL_NAMES, TOOL_SPECS


@dataclass(frozen=True)
class FileRule:
    """Restricts which paths the listed tools may touch.

    Every path argument of those tools (``agents.tools.PATH_ARGUMENTS``) is first normalised
    to the place the IDE would touch, relative to the workspace, and refused if it leaves the
    workspace or plays a name trick ("../x.md", "/etc/x.md", "x.py:.md"); then it is allowed
    when any glob matches its basename or its whole relative path, case-insensitively. See
    ``agents.policy.workspace_path`` and ``path_matches``.
    """

    tools: frozenset[str]
    allowed_globs: tuple[str, ...]
    description: str  # completes "The <agent> agent ...", e.g. "may only write Markdown files"


@dataclass(frozen=True)
class AgentSpec:
    type: str
    name: str
    description: str
    prompt: str
    tools: frozenset[str]
    file_rules: tuple[FileRule, ...] = ()
    routable: bool = True  # the orchestrator may route to it

    @property
    def has_file_restrictions(self) -> bool:
        return bool(self.file_rules)

    @property
    def allowed_tools(self) -> list[str]:
        """The agent's tools in the stable ``TOOL_NAMES`` order (for APIs and prompts)."""
        return [name for name in TOOL_NAMES if name in self.tools]

    def allows_tool(self, name: str) -> bool:
        return name in self.tools


class UnknownAgent(ValueError):
    def __init__(self, agent_type: object, available: list[str]) -> None:
        self.agent_type = agent_type
        self.available = available
        super().__init__(f'Unknown agent "{agent_type}". Available agents: {", ".join(available)}')


SPECIALISTS: tuple[str, ...] = ("coder", "architect", "debug", "ask")

_ALL_TOOLS = frozenset(TOOL_NAMES)
_HANDOFF = CONTROL_TOOLS | RUNTIME_TOOLS  # finish, ask the user, or hand off

MARKDOWN_ONLY = FileRule(
    tools=frozenset({"write_file"}),
    allowed_globs=("*.md",),
    description="may only write Markdown files (*.md)",
)

_DESCRIPTIONS = {
    "orchestrator": "Routes each request to the specialist best suited to it. Uses no tools.",
    "coder": "Writes, changes and refactors code; can use every tool.",
    "architect": (
        "Designs systems, plans changes and writes documentation; reads the code but may only "
        "write Markdown files."
    ),
    "debug": (
        "Investigates errors, crashes and failing tests by reading code and running commands; "
        "does not change files."
    ),
    "ask": "Answers questions about the code and explains concepts; reads but never changes.",
    "universal": "A general coding assistant with every tool (single-agent mode).",
}

# One line per tool for the prompts; the full schemas travel separately in the tools list.
_TOOL_BLURBS = {
    "read_file": "read a file (optionally a range of lines)",
    "write_file": "create a file or replace its whole content",
    "list_files": "list a directory",
    "create_directory": "create a directory",
    "execute_command": "run a command on the user's machine",
    "search_in_code": "search the project for text or a regular expression",
    "attempt_completion": "finish the task and report the result",
    "ask_followup_question": "ask the user a clarifying question",
    "switch_mode": "hand the conversation to another specialist",
}


def _agent_prompt(
    *, type_: str, role: str, tools: frozenset[str], rules: tuple[str, ...] = ()
) -> str:
    """Build a specialist's system prompt from its role and tool set, so they cannot drift."""
    if type_ == "universal":
        intro = "You are a coding assistant working inside the user's IDE."
    else:
        intro = (
            f"You are the {type_} agent of a team of AI assistants working inside the user's IDE."
        )
    tool_lines = "\n".join(
        f"- {name}: {_TOOL_BLURBS[name]}" for name in TOOL_NAMES if name in tools
    )
    guidance = [
        "Tools run on the user's machine through the IDE; you receive each result in the next "
        "message. Use paths relative to the project root unless the user gives absolute ones.",
        "Look before you act: read the relevant code instead of guessing what it contains.",
        "Some actions, such as writing files or running commands, may need a person's approval. "
        "If a call is rejected or refused, read the explanation and adapt; never repeat the "
        "same call unchanged.",
        *rules,
    ]
    if "switch_mode" in tools:
        others = ", ".join(s for s in SPECIALISTS if s != type_)
        guidance.append(
            "If the request is better served by another specialist, call switch_mode with its "
            f"name ({others}) and a one-sentence reason instead of working around your limits."
        )
    guidance += [
        "If the request is ambiguous or you need information only the user has, call "
        "ask_followup_question with one clear question rather than guessing.",
        "When the task is done, call attempt_completion with a concise summary of what you did "
        "and the outcome. For a simple conversational reply, just answer in text.",
    ]
    rules_text = "\n".join(f"- {line}" for line in guidance)
    return f"{intro}\n\n{role}\n\nYour tools:\n{tool_lines}\n\nHow to work:\n{rules_text}\n"


def _classifier_prompt() -> str:
    """The orchestrator's prompt: classify, answer with JSON only (parsed by agents.routing)."""
    lines = "\n".join(f"- {t}: {_DESCRIPTIONS[t]}" for t in SPECIALISTS)
    return (
        "You are the orchestrator of a team of AI coding assistants. You never answer the user "
        "yourself and you have no tools: your only job is to choose the specialist agent that "
        "should handle the user's latest request.\n\n"
        f"The specialists:\n{lines}\n\n"
        "Choose debug for errors, crashes, failing tests and unexpected behaviour; architect for "
        "design, planning and documentation; ask for questions and explanations that need no "
        "changes; coder for writing or changing code, and whenever you are unsure.\n\n"
        "Reply with ONLY a JSON object and nothing else: no prose, no Markdown, no code fence. "
        "Its keys:\n"
        '{"agent": "<one of: ' + ", ".join(SPECIALISTS) + '>", '
        '"confidence": <a number from 0 to 1>, '
        '"reasoning": "<one short sentence in English>"}\n'
    )


def _declare(
    type_: str,
    name: str,
    tools: frozenset[str],
    *,
    role: str,
    rules: tuple[str, ...] = (),
    file_rules: tuple[FileRule, ...] = (),
    routable: bool = True,
) -> AgentSpec:
    unknown = tools - set(TOOL_SPECS)
    assert not unknown, f"{type_} declares unknown tools: {sorted(unknown)}"
    return AgentSpec(
        type=type_,
        name=name,
        description=_DESCRIPTIONS[type_],
        prompt=_agent_prompt(type_=type_, role=role, tools=tools, rules=rules),
        tools=tools,
        file_rules=file_rules,
        routable=routable,
    )


_ORCHESTRATOR = AgentSpec(
    type="orchestrator",
    name="Orchestrator",
    description=_DESCRIPTIONS["orchestrator"],
    prompt=_classifier_prompt(),
    tools=frozenset(),
    routable=False,  # routing to the router would loop
)

AGENTS: dict[str, AgentSpec] = {
    "orchestrator": _ORCHESTRATOR,
    "coder": _declare(
        "coder",
        "Coder",
        _ALL_TOOLS,
        role=(
            "Your role: write, change, refactor and test code. Make focused changes that fit the "
            "project's existing style, and verify them (for example by running the tests) when "
            "you can."
        ),
        rules=(
            "write_file replaces the whole file: read it first and send the complete new content.",
        ),
    ),
    "architect": _declare(
        "architect",
        "Architect",
        READ_ONLY_TOOLS | {"write_file"} | _HANDOFF,
        role=(
            "Your role: design systems, plan changes, weigh trade-offs and write documentation. "
            "Study the existing code, then produce clear plans, designs and docs."
        ),
        rules=(
            "You may only write Markdown files (*.md) inside the project, such as design notes, "
            "plans and READMEs, named by their path relative to the project root. "
            "You cannot change code or run commands: hand implementation work to the coder.",
        ),
        file_rules=(MARKDOWN_ONLY,),
    ),
    "debug": _declare(
        "debug",
        "Debug",
        READ_ONLY_TOOLS | {"execute_command"} | _HANDOFF,
        role=(
            "Your role: find the root cause of errors, crashes, failing tests and unexpected "
            "behaviour. Read the code and tracebacks, reproduce the problem with commands, "
            "and explain what is wrong and how to fix it."
        ),
        rules=(
            "You cannot write or create files. Once the cause is clear, hand the fix to the "
            "coder, or report the diagnosis with attempt_completion.",
        ),
    ),
    "ask": _declare(
        "ask",
        "Ask",
        READ_ONLY_TOOLS | _HANDOFF,
        role=(
            "Your role: answer questions about the code and explain concepts clearly and "
            "accurately, citing the files you read."
        ),
        rules=("You only read: you cannot change files or run commands.",),
    ),
    "universal": _declare(
        "universal",
        "Universal",
        _ALL_TOOLS - RUNTIME_TOOLS,  # single-agent mode: there is no one to hand off to
        role=(
            "Your role: help with any software task: write and change code, debug problems, "
            "design and document systems, and answer questions."
        ),
        rules=(
            "write_file replaces the whole file: read it first and send the complete new content.",
        ),
        routable=False,
    ),
}


def _multi_agent_mode() -> bool:
    from django.conf import settings

    return bool(getattr(settings, "MULTI_AGENT_MODE", True))


def available_agents() -> list[AgentSpec]:
    """The agents usable in the current mode, orchestrator first."""
    if _multi_agent_mode():
        return [AGENTS["orchestrator"], *(AGENTS[t] for t in SPECIALISTS)]
    return [AGENTS["universal"]]


def get_agent(agent_type: str) -> AgentSpec:
    """Look an agent up by its exact type; it must be available in the current mode.

    Exact on purpose: callers store the type they passed in, so "Coder" must not slip through.
    """
    available = available_agents()
    for spec in available:
        if spec.type == agent_type:
            return spec
    raise UnknownAgent(agent_type, [spec.type for spec in available])


def default_agent() -> str:
    """The agent a new session starts with."""
    return "orchestrator" if _multi_agent_mode() else "universal"
