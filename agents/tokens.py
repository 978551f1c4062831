"""How many tokens a request costs: an offline estimate, calibrated by what providers report.

No tokenizer is downloaded or bundled: the models behind an OpenAI-compatible URL use many
vocabularies (cl100k/o200k, Llama, Qwen, SmolLM...), and a wrong exact tokenizer is no better
than a good estimate. The estimate follows how byte-pair encoders split text:

* a run of ASCII letters is one token up to 6 letters, two up to 12 (common words are single
  tokens; long or rare ones split), then one per 3 letters (no word is that long: identifiers
  run together, hashes, "aaaa...");
* digits go in groups of three (cl100k and Llama 3 split numbers that way);
* punctuation merges in pairs (``": "``, ``"},"``, ``()``), so JSON and code cost more per
  character than prose;
* a single space rides on the next word; a line break or a longer run of spaces costs one;
* every other character (CJK, emoji, accents) is a token of its own.

That gives ~4.5 characters per token for English prose, ~3 for code and JSON, 1 for CJK,
slightly above what cl100k counts. Each model's real figure is learned from the
``prompt_tokens`` its replies report (and from the numbers a "context too long" error states):
the ratio of reported to estimated tokens scales every later estimate for that model. It is
kept in the process; each server process learns it again after a restart within a call or two.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from typing import Any

import orjson

MESSAGE_OVERHEAD = 4  # role and framing of one chat message (OpenAI counts 3-4)
REQUEST_OVERHEAD = 3  # the reply's priming
# A reported figure this far from the estimate is not a count of the same thing (a proxy
# that reports nothing useful, a cached prompt): it is ignored rather than learned.
PLAUSIBLE_RATIO = (0.25, 4.0)
# How far a learned ratio may move the estimate: never more than 20 % below it (the estimate
# errs on the high side on purpose), up to four times above it.
FACTOR_RANGE = (0.8, 4.0)
LEARNING_RATE = 0.5  # weight of the newest observation

_PIECES = re.compile(r"[A-Za-z]+|[0-9]+|[ \t]+|\s+|[\x21-\x2f\x3a-\x40\x5b-\x60\x7b-\x7e]+|.", re.S)


@functools.lru_cache(maxsize=8192)
def estimate_text(text: str) -> int:
    """Estimated tokens of ``text`` (cached: a session's history is counted on every turn)."""
    count = 0
    for match in _PIECES.finditer(text):
        piece = match.group()
        first = piece[0]
        if first.isascii() and first.isalpha():
            n = len(piece)
            # Past 12 letters it is no word (an identifier run together, a hash, "aaaa..."):
            # encoders split those into short pieces.
            count += 1 + (n - 1) // 6 if n <= 12 else 2 + math.ceil((n - 12) / 3)
        elif first.isdigit() and first.isascii():
            count += math.ceil(len(piece) / 3)
        elif first in " \t":
            count += 0 if piece == " " else 1
        elif first.isspace():
            count += 1 + piece.count("\n") // 4 + len(piece) // 16
        elif first.isascii():
            count += math.ceil(len(piece) / 2)
        else:
            count += 1
    return count


def estimate_message(message: dict[str, Any]) -> int:
    tokens = MESSAGE_OVERHEAD + estimate_text(message.get("content") or "")
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        tokens += MESSAGE_OVERHEAD + estimate_text(function.get("name") or "")
        tokens += estimate_text(function.get("arguments") or "")
    return tokens


def estimate_tools(tools: list[dict[str, Any]] | None) -> int:
    if not tools:
        return 0
    # orjson: the same compact text as json.dumps(separators=(",", ":")) for ASCII specs, at a
    # tenth of the cost (this runs twice per model call); the text's estimate is cached.
    return estimate_text(orjson.dumps(tools, option=orjson.OPT_SORT_KEYS).decode())


def estimate_request(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> int:
    """The raw (uncalibrated) estimate of one chat-completions request's prompt."""
    return REQUEST_OVERHEAD + sum(estimate_message(m) for m in messages) + estimate_tools(tools)


# --- What each model taught us ------------------------------------------------------------------

_lock = threading.Lock()
_factors: dict[str, float] = {}
_windows: dict[str, int] = {}


def factor(model: str) -> float:
    """Reported tokens per estimated token for ``model`` (1.0 until a reply has told us)."""
    with _lock:
        return _factors.get(model, 1.0)


def observe(model: str, *, estimated: int, reported: int) -> bool:
    """Learn from a reply's ``prompt_tokens``; False when the figure was not plausible."""
    if estimated <= 0 or reported <= 0:
        return False
    ratio = reported / estimated
    if not PLAUSIBLE_RATIO[0] <= ratio <= PLAUSIBLE_RATIO[1]:
        return False
    low, high = FACTOR_RANGE
    with _lock:
        old = _factors.get(model)
        new = ratio if old is None else old + LEARNING_RATE * (ratio - old)
        _factors[model] = min(high, max(low, new))
    return True


def learn_window(model: str, tokens: int) -> None:
    """The window a provider's error stated; smaller than the setting, it wins from now on."""
    if tokens > 0:
        with _lock:
            _windows[model] = min(tokens, _windows.get(model, tokens))


def window(model: str, configured: int) -> int:
    with _lock:
        learned = _windows.get(model)
    return min(configured, learned) if learned else configured


def forget() -> None:
    """Drop everything learned (tests)."""
    with _lock:
        _factors.clear()
        _windows.clear()
