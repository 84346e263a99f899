"""report.md: each claim of the paper's Section V beside the number we measured, built only from
metrics.json (so running one experiment regenerates the whole report from what is in the folder): a summary
table, the sections of :mod:`qucnn.experiments.report_sections`, and the choices where the paper is ambiguous.

The text is Markdown that GitHub and MkDocs both render as written: bra-kets such as ``<f|x>`` are in code
spans, or, in table cells, escaped by :func:`qucnn.utils.markdown.cell`; paths of the machine that ran the
command are shown by their last component.

Example:
    >>> text = build_report({})
    >>> text.startswith("# QuCNN")
    True
"""

from __future__ import annotations

from pathlib import Path

from ..utils.files import atomic_write_text
from ..utils.markdown import cell, short_path
from .common import REPORT_FILE
from .report_format import number
from .report_sections import backprop_section, circuits_section, forward_section, learn_section

#: The last section: where the paper is ambiguous, and what the experiments chose.
NOTES = [
    "## Where the paper is ambiguous, and what we chose",
    "",
    "- **Lost equations.** The extracted text lost every equation; `docs/math.md` restates "
    "them from the surrounding text and first principles, and every one is checked numerically here or in "
    "the test suite (`W|0> = f`, the SWAP-test closed form on the full circuit, Eq. 15 on the 10-qubit circuit, "
    "the parameter shift against autograd).",
    "- **\"Maximally-mixed state\" (V-B).** A maximally mixed data state gives F = 1/d for every filter, hence "
    "a zero gradient: nothing to validate. We read it as the uniform superposition H^n|0> (default) and offer "
    "`--data-state mnist` (a real MNIST patch).",
    "- **The scale c of Eq. 17.** delta = g / c must lie in [-1, 1]. The paper folds the backpropagated value "
    "into the ancilla, so we take c = 1 and the ancilla carries delta = g (0.5 by default). The layer's own "
    "estimator (`QuConv2d(gradient=\"entanglement\")`) uses c = max_j |g_j|, which has lower variance; both "
    "are shown.",
    "- **\"Entanglement-based\" backpropagation.** Classically equivalent to the post-processed parameter shift "
    "with a random sign (V-B): it is a way to run the product g_j F on the device, not a quantum resource, and it "
    "costs c^2 (1 - delta^2)/S of variance per circuit.",
    "- **\"Unbiased\".** Every estimate here is unbiased in the statistical sense (its mean over repeats is "
    "the exact gradient / fidelity, checked to 5 standard errors); it is not noiseless. The binomial SWAP-test "
    "estimate 2 n0/S - 1 has variance (1 - F^2)/S; we check the measured spread against that formula.",
    "- **Classical vs quantum map normalisation (V-A).** QuCNN outputs squared overlaps of unit vectors. "
    "They equal the classical map only after squaring it and dividing by |F|^2 |x|^2; sign and brightness are "
    "lost. All-zero patches have no quantum state; we output 0 without running a circuit (grey in Fig. 3).",
    "- **Classical filter.** One 4x4 filter without bias (the paper does not say), so the classical map is "
    "Eq. 1 with nothing added. The paper's Fig. 3 does not say which 16 images; we take the first 16 of our "
    "test split. Fig. 6 uses this filter and filters trained with the next seeds.",
    "- **Shots.** The torch back end draws n0 ~ Binomial(S, (1+F)/2) from the exact F: the exact distribution "
    "of S runs of the noiseless circuit, but a check of our sampler, not of a circuit. `--backend aer` runs the "
    "circuits in Qiskit Aer (subsampled; see each section's backend).",
    "",
]


def _summary(metrics: dict) -> list[str]:
    """The table of the paper's claims beside ours, one row per claim whose run is in ``metrics``."""
    rows = []
    fwd = metrics.get("forward") or metrics.get("forward_aer") or metrics.get("forward_aer_noise")
    aer = metrics.get("forward_aer")
    if fwd:
        rows.append(f"| V-A, Fig. 2/3 | the SWAP test measures {cell('|<f|x>|^2')} | full 9-qubit circuit, gate by "
                    f"gate: max error {number(fwd['circuit_check']['max_abs_error'], 2)}"
                    + (f"; Qiskit Aer, {aer['circuits_run']:,} circuits x {aer['shots']:,} shots: "
                       f"{100 * aer['within_3_sigma_fraction']:.2f}% within 3 standard errors, largest "
                       f"{number(aer['max_sigma_error'], 3)}" if aer else "; Aer: not run in this folder") + " |")
        rows.append(f"| V-A, Fig. 3 | QuCNN maps replicate the classical maps, noisy edges from sampling | they are "
                    "the classical map squared and divided by the patch norm: correlation "
                    f"{number(fwd['correlation']['quantum_vs_classical_squared_normalised'])} "
                    f"({number(fwd['correlation']['quantum_vs_classical'])} with the raw map) |")
        rows.append(f"| V-A, Fig. 5 | an SVD unitary prepares the ideal convolutional state | "
                    f"{cell('max |W|0> - f|')} = {number(fwd['state_prep_error'], 2)} |")
    bp = metrics.get("backprop") or metrics.get("backprop_aer") or metrics.get("backprop_aer_noise")
    if bp:
        top = max(bp["shot_counts"])
        worst = {s["method"]: s["max_abs_error_in_se"] for s in bp["summary"] if s["shots"] == top}
        gap = bp.get("variance_gap") or []
        extra = ("; Eq. 17 adds variance c^2 (1 - delta^2)/(2S) per gradient (measured/formula "
                 + ", ".join(f"{e['measured_mean'] / e['formula']:.2f}" for e in gap) + ") and is classically "
                 "equivalent to post-processing") if gap else ""
        rows.append(f"| V-B, Fig. 4 | Eq. 17 and the post-processed shift converge with shots | both unbiased: at "
                    f"{top:,} shots {cell('max |mean - exact|')} = {number(worst.get('entanglement'), 3)} SE (Eq. 17), "
                    f"{number(worst.get('parameter-shift'), 3)} SE (post-processed){extra} |")
    sl = metrics.get("state_learning")
    if sl and "summary" in sl:
        t = sl["summary"].get("trained")
        if t:
            rows.append(f"| V-C, Fig. 6 | the ideal state is learnable by L = 1..3 layers | {t['1']['n']} trained "
                        "filters, best restart, median [min, max]: " + ", ".join(
                            f"L={k}: {number(q['median'], 3)} [{number(q['min'], 3)}, {number(q['max'], 3)}]"
                            for k, q in sorted(t.items())) + " |")
    if not rows:
        return []
    return ["## Summary", "", "| Section | Paper's claim | Ours |", "|---|---|---|"] + rows + [""]


def build_report(metrics: dict) -> str:
    """The whole report.md text from a metrics dict (sections missing from it are marked not run)."""
    last = metrics.get("last_command", {})
    head = ["# QuCNN (arXiv 2210.05443), Section V reproduced", "",
            "Generated by `qucnn reproduce` from `metrics.json` in this folder; every number below is read "
            "from it. Each section names the run that produced it (an experiment run alone merges its "
            "section into the existing metrics.json).", ""]
    if last:
        argv = [short_path(a) for a in (last.get("argv") or last.get("experiments", []))]
        head += [f"Last command: `qucnn reproduce {' '.join(argv)}` ({number(last.get('wall_time_s'), 3)} s).", ""]
    versions = metrics.get("versions")
    if versions:
        head += ["Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + ".", ""]
    body = (_summary(metrics) + forward_section(metrics) + backprop_section(metrics) + learn_section(metrics)
            + circuits_section(metrics) + NOTES)
    return "\n".join(head + body)


def write_report(out: Path, metrics: dict) -> Path:
    """Write :func:`build_report` of ``metrics`` as ``OUT/report.md``; return its path."""
    path = Path(out) / REPORT_FILE
    atomic_write_text(path, build_report(metrics))
    return path


__all__ = ["build_report", "write_report"]
