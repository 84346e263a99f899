"""MkDocs hooks of the documentation site.

- Lists as on GitHub (CommonMark), for which the pages are written: a list that directly follows a paragraph
  line is a list (Python-Markdown would run its items into the paragraph), and an item indented by 2 or 3
  spaces is nested (Python-Markdown needs 4).
- A page line ``--8<-- "path"`` is replaced by that repository file, here ``benchmarks/RESULTS.md`` on the
  Benchmarks page. Its links are written for its place in the repository: links into ``docs/`` become site
  links, links to other repository files (not part of the site) become code naming the file.
- Notebook pages (the tutorial, rendered by mkdocs-jupyter) get what MkDocs does for Markdown pages: their
  links to other pages (``math.md#section``) become the URLs of those pages, and the ``$...$`` / ``$$...$$``
  of their Markdown cells become the ``arithmatex`` elements that pymdownx.arithmatex writes, which the site's
  MathJax 3 typesets (``mkdocs.yml``, ``javascripts/mathjax.js``); nbconvert's own MathJax 2 loader is
  removed.
- After the build, every internal link and image of every built HTML page, the tutorial included, must
  resolve to a file of the built site, and its ``#anchor`` to an ``id`` on the target page; otherwise the
  build fails with the list of broken links.
"""

from __future__ import annotations

import posixpath
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

INCLUDE = re.compile(r'^--8<-- "([^"]+)"[ \t]*$', re.M)
LINK = re.compile(r"(?<!!)\[([^\]]+)\]\((?!https?://|#|mailto:)([^)\s]+)\)")
HREF_MD = re.compile(r'(href=")(?![a-z][a-z0-9+.-]*:|/|#)([^"#]+\.md)(#[^"]*)?(")', re.I)
NBCONVERT_MATHJAX = re.compile(
    r'<script[^>]*src="[^"]*mathjax[^"]*"[^>]*>\s*</script>|<script type="text/x-mathjax-config">.*?</script>',
    re.S | re.I)
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.I)
LIST_ITEM = re.compile(r"^(?:[-*+]|1[.)]) ")
NESTED_ITEM = re.compile(r"^ {2,3}(?=(?:[-*+]|\d+[.)]) )")
FENCE = re.compile(r"^\s*(```|~~~)")
MARKDOWN_CELL = re.compile(r'(<div class="[^"]*jp-MarkdownOutput[^"]*"[^>]*>)(.*?)(</div>)', re.S)
CODE = re.compile(r"(<code[^>]*>.*?</code>|<pre[^>]*>.*?</pre>)", re.S)
DISPLAY_MATH = re.compile(r"\$\$(.+?)\$\$", re.S)
INLINE_MATH = re.compile(r"(?<![\\$])\$(?![\s$])([^$\n]+?)(?<![\s\\])\$")


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


def gfm_lists(markdown: str) -> str:
    """``markdown`` with a blank line before each list that directly follows a paragraph line, and items indented
    by 2-3 spaces indented by 4 (outside fenced code), so that Python-Markdown renders lists as GitHub does."""
    out: list[str] = []
    fenced = False
    for line in markdown.split("\n"):
        if FENCE.match(line):
            fenced = not fenced
        prev = out[-1] if out else ""
        paragraph = prev.strip() and not prev[0].isspace() and not prev.startswith(("#", ">", "$$")) \
            and not LIST_ITEM.match(prev) and not FENCE.match(prev)
        if not fenced and LIST_ITEM.match(line) and paragraph:
            out.append("")
        out.append(line if fenced else NESTED_ITEM.sub("    ", line))
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Expand the include lines of ``page`` (a missing file fails the build); lists as on GitHub."""
    root = Path(config.config_file_path).parent
    return gfm_lists(INCLUDE.sub(lambda m: _include(root, m.group(1)), markdown))


def relink_notebook(html: str, page_src: str, url_of) -> str:
    """``html`` with each relative ``href="X.md#a"`` replaced by ``url_of(src)`` (the URL of the page built from
    docs file ``src``, relative to this page, or ``None`` to leave the link as it is) plus ``#a``; ``page_src``
    is this page's docs path (``tutorial.md``), against which ``X.md`` is resolved."""

    def swap(match: re.Match) -> str:
        head, target, anchor, tail = match.groups()
        src = posixpath.normpath(posixpath.join(posixpath.dirname(page_src), unquote(target)))
        url = url_of(src)
        return match.group(0) if url is None else f"{head}{url}{anchor or ''}{tail}"

    return HREF_MD.sub(swap, html)


def notebook_math(html: str) -> str:
    """``html`` with the ``$$...$$`` and ``$...$`` of notebook Markdown cells (not in code) written as
    pymdownx.arithmatex writes them: ``<div class="arithmatex">\\[...\\]</div>``, ``<span class="arithmatex">
    \\(...\\)</span>``."""

    def math(text: str) -> str:
        text = DISPLAY_MATH.sub(lambda m: f'<div class="arithmatex">\\[{m.group(1)}\\]</div>', text)
        return INLINE_MATH.sub(lambda m: f'<span class="arithmatex">\\({m.group(1)}\\)</span>', text)

    def cell(match: re.Match) -> str:
        head, body, tail = match.groups()
        parts = CODE.split(body)  # odd entries are code: left as they are
        return head + "".join(part if i % 2 else math(part) for i, part in enumerate(parts)) + tail

    return MARKDOWN_CELL.sub(cell, html)


def on_page_content(html: str, page, config, files) -> str:
    """Notebook pages: page links as MkDocs writes them, math for the site's MathJax, and no second MathJax
    (see the module docstring)."""
    if type(page.file).__name__ != "NotebookFile":
        return html

    def url_of(src: str) -> str | None:
        target = files.get_file_from_path(src)
        return None if target is None else target.url_relative_to(page.file)

    return notebook_math(NBCONVERT_MATHJAX.sub("", relink_notebook(html, page.file.src_uri, url_of)))


class _Page(HTMLParser):
    """The ids and the links (``href`` of ``a`` and ``link``, ``src`` of ``img``, ``script``, ``source``) of
    one HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if values.get(key):
                self.ids.add(values[key])
        attr = {"a": "href", "link": "href", "img": "src", "script": "src", "source": "src"}.get(tag)
        if attr and values.get(attr):
            self.links.append(values[attr])


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8", errors="replace"))
    return page


def broken_links(site: str | Path) -> list[str]:
    """Every internal link of the HTML pages under ``site`` that does not resolve, as ``"page: link (why)"``.

    A link resolves when its path (relative to its page, or to ``site`` when it starts with ``/``) names a file
    of ``site`` (a folder: its ``index.html``) and its fragment, if
    any and if the target is an HTML page, is an ``id`` (or ``<a name>``) on that page. External links
    (``https:``, ``mailto:``, ``data:``, ...) are not followed.

    Example:
        broken_links("site")  # [] when every internal link resolves
    """
    root = Path(site)
    pages = {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*.html"))}
    parsed: dict[str, _Page] = {}

    def page(rel: str) -> _Page:
        if rel not in parsed:
            parsed[rel] = _parse(pages[rel])
        return parsed[rel]

    problems = []
    for rel in pages:
        for link in page(rel).links:
            if EXTERNAL.match(link):
                continue
            parts = urlsplit(link)
            target = rel
            if parts.path:
                path = unquote(parts.path)  # 404.html links from the site's root: it is served at any URL
                joined = path[1:] if path.startswith("/") else posixpath.join(posixpath.dirname(rel), path)
                target = posixpath.normpath(joined)
                if parts.path.endswith("/") or (root / target).is_dir():
                    target = posixpath.join(target, "index.html")
                if target.startswith("../") or not (root / target).is_file():
                    problems.append(f"{rel}: {link} (no such file in the site)")
                    continue
            anchor = unquote(parts.fragment)
            if anchor and target in pages and anchor not in page(target).ids:
                problems.append(f"{rel}: {link} (no id {anchor!r} on {target})")
    return problems


def on_post_build(config) -> None:
    """Fail the build if any internal link of the built site is broken (see :func:`broken_links`)."""
    problems = broken_links(config.site_dir)
    if problems:
        from mkdocs.exceptions import PluginError

        raise PluginError(f"{len(problems)} broken internal links in the built site:\n  " + "\n  ".join(problems))
