"""What a new user and their tools read: a docstring on every public callable, the type-hint marker, the licence,
the dependencies a plain install needs, and the documentation site's configuration."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import re
import warnings
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: the test extra installs tomli
    import tomli as tomllib

import qucnn

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(qucnn.__file__).parent


def public_modules() -> list[str]:
    """qucnn and every module under it whose dotted name has no part starting with an underscore."""
    found = ["qucnn"]
    for info in pkgutil.walk_packages(qucnn.__path__, "qucnn."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            found.append(info.name)
    return found


def _own_or_inherited_doc(cls: type, name: str) -> str | None:
    """The docstring of ``cls.name``, or of the same member of a qucnn base class it overrides."""
    for base in cls.__mro__:
        if name in vars(base) and base.__module__.startswith("qucnn"):
            member = vars(base)[name]
            func = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
            if getattr(func, "__doc__", None):
                return func.__doc__
    return None


def undocumented() -> list[str]:
    missing = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in public_modules():
            module = importlib.import_module(name)
            if not module.__doc__:
                missing.add(f"module {name}")
            for attr in getattr(module, "__all__", []):
                obj = getattr(module, attr)
                if not (inspect.isclass(obj) or inspect.isfunction(obj)) or not obj.__module__.startswith("qucnn"):
                    continue
                where = f"{obj.__module__}.{obj.__qualname__}"
                if not obj.__doc__:
                    missing.add(where)
                if not inspect.isclass(obj):
                    continue
                for member, value in vars(obj).items():
                    # __init__ is documented by the class docstring; other dunders and _private are not API
                    if member.startswith("_") and member not in ("__call__", "__getitem__"):
                        continue
                    if isinstance(value, (property, staticmethod, classmethod)) or inspect.isfunction(value):
                        if not _own_or_inherited_doc(obj, member):
                            missing.add(f"{where}.{member}")
    return sorted(missing)


def test_every_public_callable_has_a_docstring():
    assert len(public_modules()) > 50
    assert undocumented() == []
    assert "(B, C, H, W)" in qucnn.QuConv2d.forward.__doc__  # the layer's forward says its shapes


def test_the_walk_finds_a_missing_docstring(monkeypatch):
    def bare(x):
        return x

    monkeypatch.setattr(qucnn.nn.layer.QuConv2d, "bare", bare, raising=False)
    monkeypatch.setattr(qucnn, "__all__", qucnn.__all__ + ["_probe"])
    monkeypatch.setattr(qucnn, "_probe", type("Probe", (), {"__module__": "qucnn.probe"}), raising=False)
    found = undocumented()
    assert "qucnn.nn.layer.QuConv2d.bare" in found and "qucnn.probe.Probe" in found


def test_type_hints_ship_with_the_package():
    assert (PACKAGE / "py.typed").is_file()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["qucnn"]


def test_licence_and_dependencies_of_a_plain_install():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    licence = (ROOT / "LICENSE").read_text()
    assert config["license"] == "MIT" and licence.startswith("MIT License")
    assert "Copyright (c) 2026 the qucnn authors" in licence and "LICENSE" in config["license-files"]
    names = {re.split(r"[<>=\[ ]", dep)[0] for dep in config["dependencies"]}
    assert {"torch", "numpy", "tqdm", "matplotlib"} <= names  # qucnn reproduce / train draw figures
    extras = config["optional-dependencies"]
    assert set(extras["bench"]) <= set(extras["all"])  # [all] installs every benchmark peer
    assert {"mkdocs", "mkdocs-material", "mkdocs-jupyter"} <= {re.split(r"[<>=\[ ]", d)[0] for d in extras["docs"]}


def test_the_docs_site_lists_every_page_and_runs_the_tutorial():
    text = (ROOT / "mkdocs.yml").read_text()
    nav = set(re.findall(r":\s+([\w/.-]+\.md)\s*$", text, flags=re.M))
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert pages - nav == set(), "pages missing from the nav of mkdocs.yml"
    assert nav - pages == set(), "nav entries without a page"
    assert re.search(r"execute: true", text) and re.search(r"allow_errors: false", text)
    tutorial = (ROOT / "docs" / "tutorial.md").read_text()
    assert "kernelspec" in tutorial and "DataLoader" in tutorial and "QuConv2d" in tutorial


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docstrings_are_rewritten_for_the_api_reference():
    ext = _load("griffe_docstrings")
    doc = 'Run it, see :class:`~qucnn.nn.layer.QuConv2d` and :func:`qucnn.train`.\n\nExample:\n    >>> 1 + 1\n    2\n'
    assert ext._examples(ext.ROLE.sub(ext._role, doc)) == (
        "Run it, see `QuConv2d` and `qucnn.train`.\n\nExamples:\n    >>> 1 + 1\n    2")
    plain = 'Text.\n\n    Example:\n        out = f(x)["key"]\n        # -> 3\n\n    Returns:\n        x.'
    assert ext._examples(plain) == ('Text.\n\n    Examples:\n        ```python\n        out = f(x)["key"]\n'
                                    '        # -> 3\n        ```\n\n    Returns:\n        x.')


def test_the_benchmarks_page_includes_results_with_site_links(tmp_path):
    hooks = _load("hooks")
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "RESULTS.md").write_text(
        "See [precision](../docs/precision.md#fp32), [the run](results-cpu.md) and ![img](x.png).\n")
    page = '# B\n--8<-- "benchmarks/RESULTS.md"\n'
    got = hooks.INCLUDE.sub(lambda m: hooks._include(tmp_path, m.group(1)), page)
    assert got == ("# B\nSee [precision](precision.md#fp32), the run (`benchmarks/results-cpu.md`) and "
                   "![img](x.png).\n\n")


def _site(root: Path, pages: dict[str, str]) -> Path:
    for rel, body in pages.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(body)
    return root


def test_the_link_checker_finds_broken_links_and_anchors(tmp_path):
    hooks = _load("hooks")
    good = _site(tmp_path / "good", {
        "index.html": '<a href="math/#eq-17">x</a> <a href="math/">y</a> <img src="img/fig.png"> <a href="#top">t</a>'
                      '<h1 id="top"></h1> <a href="https://arxiv.org/abs/2210.05443">z</a> <a href="mailto:a@b">m</a>'
                      '<img src="data:image/png;base64,AAAA">',
        "math/index.html": '<h2 id="eq-17">Eq. 17</h2><a href="../">home</a><a href="/math/#eq-17">root</a>',
        "img/fig.png": "png",
        "404.html": '<a href="/math/">math</a><link href="/img/fig.png">'})
    assert hooks.broken_links(good) == []
    # the tutorial's links before the fix: mkdocs-jupyter left them as Markdown file names
    bad = _site(tmp_path / "bad", {
        "index.html": '<a href="math/#no-such-anchor">x</a> <a href="training.md">t</a> <img src="missing.png">',
        "math/index.html": '<h2 id="eq-17"></h2><a href="../../outside/">up</a>'})
    assert sorted(hooks.broken_links(bad)) == [
        "index.html: math/#no-such-anchor (no id 'no-such-anchor' on math/index.html)",
        "index.html: missing.png (no such file in the site)",
        "index.html: training.md (no such file in the site)",
        "math/index.html: ../../outside/ (no such file in the site)"]


def test_notebook_links_to_pages_become_page_urls():
    hooks = _load("hooks")
    urls = {"math.md": "../math/", "api/layer.md": "../api/layer/"}
    html = ('<a href="math.md#eq-17">m</a> <a href="api/layer.md">l</a> <a href="https://x.org/a.md">e</a> '
            '<a href="gone.md">g</a> <a href="#top">t</a>')
    assert hooks.relink_notebook(html, "tutorial.md", urls.get) == (
        '<a href="../math/#eq-17">m</a> <a href="../api/layer/">l</a> <a href="https://x.org/a.md">e</a> '
        '<a href="gone.md">g</a> <a href="#top">t</a>')


def test_notebook_math_becomes_what_arithmatex_writes():
    hooks = _load("hooks")
    cell = ('<div class="jp-RenderedHTMLCommon jp-MarkdownOutput" data-mime-type="text/markdown">'
            '<p>fidelity $|\\langle f|x\\rangle|^2$, $$F = 1$$, costs $5 and <code>$HOME$</code></p></div>')
    assert hooks.notebook_math(cell + "<div>$x$ in an output</div>") == (
        '<div class="jp-RenderedHTMLCommon jp-MarkdownOutput" data-mime-type="text/markdown">'
        '<p>fidelity <span class="arithmatex">\\(|\\langle f|x\\rangle|^2\\)</span>, '
        '<div class="arithmatex">\\[F = 1\\]</div>, costs $5 and <code>$HOME$</code></p></div>'
        "<div>$x$ in an output</div>")


def test_a_list_after_a_paragraph_line_is_a_list_as_on_github():
    hooks = _load("hooks")
    page = "**1. Forward.**\n- a\n  more\n  - nested\n- b\n\n```\nx\n- code\n  - code\n```\n# Head\n- c\ntext\n* d"
    assert hooks.gfm_lists(page) == ("**1. Forward.**\n\n- a\n  more\n    - nested\n- b\n\n```\nx\n- code\n  - code\n```"
                                     "\n# Head\n- c\ntext\n\n* d")
