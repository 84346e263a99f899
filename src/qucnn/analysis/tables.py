"""The Markdown tables of the documentation pages, generated from the studies' JSON, so that every number a
page's table shows is the JSON's number, formatted one way (``tests/test_doc_tables.py`` checks each page
against its committed JSON).

One function per study: :func:`shots_markdown` (``qucnn analyze shots``), :func:`hardware_markdown`
(``qucnn analyze hardware``), :func:`scaling_markdown` (``qucnn analyze scaling``) and
:func:`compare_markdown` (``qucnn train --compare``); :func:`differences_markdown` is the table of paired
differences they share. Accuracies in the JSON are fractions; the tables show percent and points.

Example:
    import json
    print(shots_markdown(json.load(open("docs/shots.json"))))
"""

from __future__ import annotations

import math

from ..utils.stats import verdict

_DIFF_HEADER = ("| a - b | difference, points [95% CI] | p (Holm) | TOST: equivalent within | verdict |\n"
                "|---|---|---|---|---|")
_SHOTS_NAMES = {"autograd": "exact (autograd)", "frozen": "frozen filters",
                "parameter-shift": "parameter shift, post-processed", "entanglement": "Eq. 17 (entanglement)",
                "sampled": 'sampled (`gradient="sampled"`)'}


def _pct(mean: float, ci: list | None = None, sign: str = "") -> str:
    """``97.42`` or ``97.42 [97.26, 97.59]`` from fractions; ``sign="+"`` for differences."""
    text = f"{100 * mean:{sign}.2f}"
    return text if ci is None else f"{text} [{100 * ci[0]:{sign}.2f}, {100 * ci[1]:{sign}.2f}]"


def _pm(summary: dict) -> str:
    return f"{100 * summary['mean']:.2f} +- {100 * summary['std']:.2f}"


def _sci(value: float | None) -> str:
    """``7.6e7`` (two significant digits, no ``+`` or leading zero in the exponent)."""
    if value is None:
        return "exact"
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.2g}"


def differences_markdown(differences: list[dict]) -> str:
    """The paired differences ``a - b`` (points, two-sided 95 % t interval), Holm-corrected p, the smallest
    margin the TOST would accept and :func:`qucnn.utils.stats.verdict`, one row per entry."""
    rows = [_DIFF_HEADER]
    for d in differences:
        eq = "-" if d["equivalent_at"] is None else f"±{100 * d['equivalent_at']:.2f}"
        rows.append(f"| `{d['a']}` - `{d['b']}` | {_pct(d['mean'], d['ci95'], '+')} | {_p(d['p_holm'])} | {eq} | "
                    f"{verdict(d).replace('+-', '±')} |")
    return "\n".join(rows)


def _versus_frozen(vs: dict | None) -> tuple[str, str, str]:
    if vs is None:
        return "-", "-", "-"
    if vs["significant"]:
        word = "**above frozen**" if vs["mean"] > 0 else "**below frozen**"
    elif vs["equivalent"]:
        word = f"equivalent to frozen within ±{100 * vs['margin']:g}"
    else:
        word = "not resolved"
    return _pct(vs["mean"], vs["ci95"], "+"), _p(vs["p_holm"]), word


def _orders(point: dict) -> str:
    if point["orders_of_magnitude"] is None:
        return "never"
    return ("<= " if point["where"] == "at or below first" else "") + f"{point['orders_of_magnitude']:+.1f}"


def shots_markdown(result: dict) -> str:
    """The shots study: per setting its budget, gradient shots and circuits, accuracy [95 % CI] and the paired
    difference from frozen filters; then each sampled setting's crossings against each dense estimator, in
    shots and in circuits (cost where the upper interval end, the mean and the lower end reach 0; the
    saving in orders of magnitude at the low and high crossing; claimed or not)."""
    rows = ["| estimator | per circuit or step | total gradient shots | gradient circuits | test accuracy % [95% CI] "
            "| minus frozen, points [95% CI] | p (Holm) | verdict |", "|---|---|---|---|---|---|---|---|"]
    for s in result["settings"]:
        per = (f"S = {s['shots']}" if s["shots"] else
               f"N = 1e{round(math.log10(s['budget']))}" if s["budget"] else "-")
        diff, p, word = _versus_frozen(s["vs_frozen"])
        rows.append(f"| {_SHOTS_NAMES[s['method']]} | {per} | {_sci(s['gradient_shots'])} | "
                    f"{_sci(s['gradient_circuits'])} | {_pct(s['summary']['mean'], s['summary']['ci95'])} | {diff} | "
                    f"{p} | {word} |")
    rows += ["", "| sampled setting | against | cost in | its own cost | dense needs at least | at the mean "
             "| significantly better from | saving, orders of magnitude (low / mean / high) | claimed |",
             "|---|---|---|---|---|---|---|---|---|"]
    for point in (result.get("saving") or {}).get("points", []):
        for method, by_cost in point["against"].items():
            for cost, sv in by_cost.items():
                ends = " / ".join(_orders(sv[k]) for k in ("low", "central", "high"))
                costs = " | ".join(("never" if sv[k]["cost"] is None else
                                    ("<= " if sv[k]["where"] == "at or below first" else "") + _sci(sv[k]["cost"]))
                                   for k in ("low", "central", "high"))
                rows.append(f"| {point['label']} | {method} | {cost} | {_sci(sv['own_cost'])} | {costs} | {ends} | "
                            f"{'**yes**' if sv['claimed'] else 'no'} |")
    return "\n".join(rows)


def hardware_markdown(result: dict) -> str:
    """The hardware study: per arm the accuracy over seeds (mean +- std, 95 % CI), the mean spread of its
    repeated shot-based evaluations, the exact evaluation, training circuits and shots and CPU seconds per
    run; then :func:`differences_markdown`."""
    n = len(result["config"]["seeds"])
    repeats = result["config"]["task"]["eval_repeats"]
    rows = [f"| arm | test accuracy % (mean +- std, {n} seeds) | 95% CI | spread of the {repeats} evaluations (std, "
            "points) | exact evaluation % | training circuits | training shots | CPU s per run |",
            "|---|---|---|---|---|---|---|---|"]
    for label, arm in result["arms"].items():
        runs = [r for r in result["rows"] if r["label"] == label]
        s = arm["summary"]
        cpu = sum(r["cpu_s"] for r in runs) / len(runs)
        rows.append(f"| `{label}` | {_pm(s)} | [{100 * s['ci95'][0]:.2f}, {100 * s['ci95'][1]:.2f}] | "
                    f"{100 * arm['eval_std_mean']:.2f} | {100 * arm['exact_eval']['mean']:.2f} | "
                    f"{runs[0]['circuits']:,} | {_sci(runs[0]['shots'])} | {cpu:.2g} |")
    return "\n".join(rows) + "\n\n" + differences_markdown(result["differences"])


def _shared_exponent(value: float, se: float, exponent: int) -> str:
    return f"{value / 10 ** exponent:.2f}e{exponent} +- {se / 10 ** exponent:.2f}e{exponent}"


def scaling_markdown(result: dict) -> str:
    """The scaling study: per arm and qubit count the accuracy (mean +- std, 95 % CI) and seconds per run;
    :func:`differences_markdown`; per qubit count the measured ``Var[dF/dtheta]`` (first and last
    parameter, +- its standard error) against the plateau fit's prediction, and with a shots arm the
    per-circuit signal-to-noise ratio at its budget."""
    n = len(result["config"]["seeds"])
    rows = [f"| arm | test accuracy % (mean +- std, {n} seeds) | 95% CI | training s per run |", "|---|---|---|---|"]
    for label, arm in result["arms"].items():
        s = arm["summary"]
        rows.append(f"| `{label}` | {_pm(s)} | [{100 * s['ci95'][0]:.2f}, {100 * s['ci95'][1]:.2f}] | "
                    f"{arm['seconds']:.3g} |")
    shots = result["config"]["gradient_shots"]
    snr = f" SNR at {shots:,} shots, first / last |" if shots else ""
    var = ["| $n$ | kernel / stride | Var, first parameter (+- SE) | predicted | Var, last parameter (+- SE) | "
           f"predicted |{snr}", "|---|---|---|---|---|---|" + ("---|" if shots else "")]
    for v in result["variance"]:
        cells = [f"{v['qubits']}", f"{v['kernel']}x{v['kernel']} / {v['stride']}"]
        for p in ("first", "last"):
            exponent = math.floor(math.log10(v[f"var_grad_{p}"]))
            cells += [_shared_exponent(v[f"var_grad_{p}"], v[f"var_grad_{p}_stderr"], exponent),
                      f"{v['predicted'][f'var_grad_{p}'] / 10 ** exponent:.2f}e{exponent}"]
        if shots:
            cells.append(f"{v['snr_first']:.2f} / {v['snr_last']:.2f}")
        var.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n\n" + differences_markdown(result["differences"]) + "\n\n" + "\n".join(var)


def compare_markdown(metrics: dict) -> str:
    """``qucnn train --compare``: per kind and head the test accuracy (mean +- std, 95 % CI), the validation
    accuracy, trainable parameters and the settings; :func:`differences_markdown`; with tuning, the
    validation accuracy (%) of every grid point per kind and head (bold: chosen)."""
    rows = ["| kind | head | test accuracy % (mean +- std) | 95% CI | val. accuracy % | trainable first layer / all "
            "| lr, schedule |", "|---|---|---|---|---|---|---|"]
    for kind, by_head in metrics["compare"].items():
        for head, c in by_head.items():
            s, st, mo = c["summary"], c["settings"], c["model"]
            rows.append(f"| {kind} | {head} | {_pm(s)} | [{100 * s['ci95'][0]:.2f}, {100 * s['ci95'][1]:.2f}] | "
                        f"{_pm(s['validation'])} | {mo['first_layer_trainable']} / {mo['trainable']:,} | "
                        f"{st['lr']:g}, {st['schedule']} |")
    text = "\n".join(rows) + "\n\n" + differences_markdown(metrics["differences"])
    tuning = metrics.get("tuning")
    if not tuning:
        return text
    arms = [(k, h) for k, by_head in metrics["compare"].items() for h in by_head]
    grid = ["| lr | schedule | " + " | ".join(f"{k}/{h}" for k, h in arms) + " |",
            "|---|---|" + "---|" * len(arms)]
    for i, point in enumerate(tuning["results"][arms[0][0]][arms[0][1]]):
        cells = []
        for k, h in arms:
            row, chosen = tuning["results"][k][h][i], tuning["chosen"][k][h]
            val = f"{100 * row['validation_accuracy']:.2f}"
            cells.append(f"**{val}**" if (row["lr"], row["schedule"]) == (chosen["lr"], chosen["schedule"]) else val)
        grid.append(f"| {point['lr']:g} | {point['schedule']} | " + " | ".join(cells) + " |")
    return text + "\n\n" + "\n".join(grid)


__all__ = ["compare_markdown", "differences_markdown", "hardware_markdown", "scaling_markdown", "shots_markdown"]
