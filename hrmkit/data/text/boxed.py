"""The final-answer box of a worked response: HRM-Text's ``cot`` answers end in ``\\boxed{...}`` (spec §6.4), so
both the text evaluator and the worked-solution tasks read the answer from the last box."""

from __future__ import annotations

import re

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` or ``\\fbox{...}`` in ``text`` (nested braces kept), or None."""
    found = None
    for match in _BOX.finditer(text):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    found = text[start:i]
                    break
    return found
