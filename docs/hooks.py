"""MkDocs hook: a page line ``--8<-- "path"`` is replaced by that repository file, here
``benchmarks/RESULTS.md`` on the Benchmarks page. Its links are written for its place in the repository:
links into ``docs/`` become site links, links to other repository files (not part of the site) become
code naming the file."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

INCLUDE = re.compile(r'^--8<-- "([^"]+)"[ \t]*$', re.M)
LINK = re.compile(r"(?<!!)\[([^\]]+)\]\((?!https?://|#|mailto:)([^)\s]+)\)")


def _include(root: Path, relative: str) -> str:
    path = root / relative
    base = path.parent.relative_to(root)

    def relink(match: re.Match) -> str:
        text, target = match.groups()
        resolved = posixpath.normpath(posixpath.join(base.as_posix(), target))
        if resolved.startswith("docs/"):
            return f"[{text}]({resolved[len('docs/'):]})"
        return f"{text} (`{resolved}`)"

    return LINK.sub(relink, path.read_text(encoding="utf-8"))


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Expand the include lines of ``page`` (a missing file fails the build)."""
    root = Path(config.config_file_path).parent
    return INCLUDE.sub(lambda m: _include(root, m.group(1)), markdown)
