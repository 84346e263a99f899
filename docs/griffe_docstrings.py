"""Griffe extension: read qucnn's docstrings the way they are written, for the API reference.

The docstrings follow Google style with two habits from reStructuredText that mkdocstrings would render
badly: an ``Example:`` section (Google style's name is ``Examples:``; ``Example:`` becomes a plain
admonition, where ``>>>`` turns into a quote) and Sphinx roles such as ``:class:`~qucnn.nn.QuConv2d```.
This extension renames the section, puts an example written without ``>>>`` prompts into a code block,
and turns each role into inline code of the name it shows.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj|py:\w+):`(~?)([^`]+)`")
SECTION = re.compile(r"^(?P<indent>[ \t]*)Examples?:[ \t]*$")


def _role(match: re.Match) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def _examples(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        head = SECTION.match(lines[i])
        if not head:
            out.append(lines[i])
            i += 1
            continue
        indent = len(head["indent"])
        body = []
        i += 1
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            i -= 1
            body.pop()
        code = textwrap.dedent("\n".join(body))
        out.append(" " * indent + "Examples:")
        if ">>>" in code:
            out += body
        else:  # an example written as plain code (its results in comments): show it as code
            pad = " " * (indent + 4)
            out += [pad + "```python"] + [pad + line if line else "" for line in code.splitlines()] + [pad + "```"]
    return "\n".join(out)


class QucnnDocstrings(griffe.Extension):
    """Rewrite each docstring as described in the module docstring, before Griffe parses it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _examples(ROLE.sub(_role, obj.docstring.value))
