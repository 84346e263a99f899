"""How report.md writes numbers, fits, the run behind a section and its figures: the formatting that
:mod:`qucnn.experiments.report_sections` and :mod:`qucnn.experiments.report` share.

Example:
    >>> number(2 / 3, 2)
    '0.67'
"""

from __future__ import annotations

from ..utils.markdown import short_path


def number(value: float | int | str | None, digits: int = 4) -> str:
    """``value`` for a report: a float to ``digits`` significant digits, ``None`` as ``n/a``, anything else as is.

    Example:
        >>> number(0.123456), number(None), number(12)
        ('0.1235', 'n/a', '12')
    """
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def fit_text(fit: dict | None) -> str:
    """``a F + b`` of a least-squares fit (``{"slope", "intercept"}``), with the sign of ``b`` written once.

    Example:
        >>> fit_text({"slope": 0.9, "intercept": -0.013})
        '0.9 F - 0.013'
    """
    if not fit:
        return "n/a"
    b = fit["intercept"]
    return f"{number(fit['slope'])} F {'-' if b < 0 else '+'} {number(abs(b), 2)}"


def run_note(section: dict, name: str = "") -> str:
    """The italic line naming the run behind a section: seed, device, backend, data, preset, wall time.

    Example:
        >>> run_note({"meta": {"seed": 0, "device": "cpu", "backend": "torch", "wall_time_s": 12.5}})
        '*Run: seed 0, device cpu, backend torch, data None, full preset, 12.5 s.*'
    """
    m = section.get("meta", {})
    preset = "--quick" if m.get("quick") else "full"
    backend = m.get("backend", "?") + (" + noise" if m.get("noise") else "")
    return (f"*Run: seed {m.get('seed')}, device {m.get('device')}, backend {backend}, "
            f"data {short_path(m.get('data'))}, "
            f"{preset} preset, {number(m.get('wall_time_s'), 3)} s" + (f" ({name})" if name else "") + ".*")


def figure_links(runs: list[tuple[dict, str]]) -> list[str]:
    """Markdown images of every figure of every ``(section, name)`` run, once each (the name in the alt text).

    Example:
        >>> figure_links([({"figures": ["a.png"]}, "torch"), ({"figures": ["a.png"]}, "aer")])
        ['![torch: a.png](a.png)']
    """
    figures = dict.fromkeys((fig, name) for sec, name in runs for fig in sec.get("figures", []))
    seen: set[str] = set()
    lines = []
    for fig, name in figures:
        if fig not in seen:
            seen.add(fig)
            lines.append(f"![{name or 'figure'}: {fig}]({fig})")
    return lines


__all__ = ["figure_links", "fit_text", "number", "run_note"]
