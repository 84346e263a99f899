"""report.md: each claim of the paper's Section V beside the number we measured, built only from
metrics.json (so running one experiment regenerates the whole report from what is in the folder).

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

VARIANTS = (("", "torch, binomial shot draws"), ("_aer", "Qiskit Aer"), ("_aer_noise", "Qiskit Aer + noise model"))


def _f(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _line(fit: dict | None) -> str:
    """``a F + b`` of a least-squares fit, with the sign of ``b`` written once."""
    if not fit:
        return "n/a"
    b = fit["intercept"]
    return f"{_f(fit['slope'])} F {'-' if b < 0 else '+'} {_f(abs(b), 2)}"


def _meta(section: dict, name: str = "") -> str:
    m = section.get("meta", {})
    preset = "--quick" if m.get("quick") else "full"
    backend = m.get("backend", "?") + (" + noise" if m.get("noise") else "")
    return (f"*Run: seed {m.get('seed')}, device {m.get('device')}, backend {backend}, "
            f"data {short_path(m.get('data'))}, "
            f"{preset} preset, {_f(m.get('wall_time_s'), 3)} s" + (f" ({name})" if name else "") + ".*")


def _images(runs: list[tuple[dict, str]]) -> list[str]:
    """Markdown images of every figure of every run (its backend in the alt text)."""
    figures = dict.fromkeys((fig, name) for sec, name in runs for fig in sec.get("figures", []))
    seen: set[str] = set()
    lines = []
    for fig, name in figures:
        if fig not in seen:
            seen.add(fig)
            lines.append(f"![{name or 'figure'}: {fig}]({fig})")
    return lines


def _forward(metrics: dict) -> list[str]:
    runs = [(metrics[f"forward{k}"], name) for k, name in VARIANTS if f"forward{k}" in metrics]
    if not runs:
        return ["## V-A Forward pass (Fig. 3, Fig. 5)", "", "*Not run yet: `qucnn reproduce forward`.*", ""]
    base = runs[0][0]
    aer = metrics.get("forward_aer")
    lines = ["## V-A Forward pass (Fig. 3, Fig. 5)", "",
             *_images(runs), "",
             f"Classical network: {base['classical']['architecture']}, {base['classical']['optimizer']}, "
             f"{base['classical']['epochs']} epochs on {base['classical']['train_images']} training images. "
             f"Test accuracy **{_f(base['classical_test_accuracy'])}** on {base['classical']['test_images']} "
             "test images (the paper gives none). The filter has no bias, so the classical map is Eq. 1 exactly.",
             "",
             "**Validation: the circuits themselves.** These checks compare our closed form with circuits "
             "that are simulated gate by gate or run by an independent simulator (Qiskit Aer):", "",
             "| Check | Measured | Run by |", "|---|---|---|",
             f"| {cell('W|0> is the ideal convolutional state (Fig. 5)')} | {cell('max |W|0> - f|')} = "
             f"{_f(base['state_prep_error'], 2)}, {cell('max |W^H W - I|')} = {_f(base['unitary_error'], 2)} | our "
             "statevector simulator |",
             f"| the 9-qubit SWAP-test circuit (SVD unitaries, CSWAPs) measures {cell('|<f|x>|^2')} | "
             f"{base['circuit_check']['patches']} patches, gate by gate: {cell('max |<Z_a> - F|')} = "
             f"{_f(base['circuit_check']['max_abs_error'], 2)} | our statevector simulator |"]
    if aer:
        lines.append(f"| shots from the circuits, not from F | {aer['circuits_run']:,} circuits x {aer['shots']:,} "
                     f"shots: {100 * aer['within_3_sigma_fraction']:.2f}% within 3 standard errors of F "
                     f"(normal: {100 * aer['within_3_sigma_expected']:.2f}%), largest "
                     f"{_f(aer['max_sigma_error'], 3)}; mean {_f(aer['mean_sigma_error'], 2)}, rms "
                     f"{_f(aer['rms_sigma_error'], 3)}; fit estimate = {_line(aer.get('fit'))} | Qiskit Aer |")
    else:
        lines.append("| shots from the circuits, not from F | *not run in this folder: `qucnn reproduce forward "
                     "--backend aer`* | Qiskit Aer |")
    noisy = metrics.get("forward_aer_noise")
    if noisy:
        lines.append(f"| the same under the noise model | {noisy['circuits_run']:,} circuits: estimate = "
                     f"{_line(noisy.get('fit'))}; {100 * noisy['within_3_sigma_fraction']:.1f}% within 3 shot "
                     "standard errors | Qiskit Aer + noise |")
    torch_run = metrics.get("forward")
    if torch_run:
        t = torch_run
        lines += ["", "**Consistency of our own sampler (not a validation).** The torch back end draws "
                  "`n0 ~ Binomial(S, (1 + F)/2)` from the exact F, so the following only checks that the sampler "
                  "does what it says:", "",
                  f"- {t['circuits_run']:,} non-zero patches of {t['images']} images x {t['shots']:,} shots "
                  f"(all-zero patches give 0 and are not run): largest error {_f(t['max_sigma_error'], 3)} "
                  f"standard errors, {100 * t['within_3_sigma_fraction']:.2f}% within 3 (normal: "
                  f"{100 * t['within_3_sigma_expected']:.2f}%), mean {_f(t['mean_sigma_error'], 2)}, rms "
                  f"{_f(t['rms_sigma_error'], 3)}, fit estimate = {_line(t.get('fit'))}."]
    corr = base["correlation"]
    lines += ["", "**What the quantum maps are.** Paper: the quantum maps \"replicate\" the classical ones. "
              "QuCNN outputs `|<f|x>|^2 = Conv(X,F)^2 / (|F|^2 |x|^2)` (max difference from the exact fidelity "
              f"{_f(corr['classical_squared_normalised_vs_exact_fidelity_max_abs_diff'], 2)}): the classical map "
              "**squared and divided by the patch norm**, not the classical map. Correlation of the shot estimates "
              f"with that expression: **{_f(corr['quantum_vs_classical_squared_normalised'])}**; with Conv(X,F)^2: "
              f"{_f(corr.get('quantum_vs_classical_squared'))}; with Conv(X,F): {_f(corr['quantum_vs_classical'])}; "
              f"with ReLU(Conv(X,F)): {_f(corr['quantum_vs_classical_relu'])} (how close the raw map comes depends on "
              "the filter: these numbers are for this one). The map loses the sign (an anti-aligned patch scores "
              "as high as an aligned one) and the brightness (a faint patch at a stroke's border scores like a "
              "bright one of the same shape), so structure at the borders of strokes is already in the exact "
              "fidelity map (Fig. 3, bottom left): the paper's \"noisy edges\" need not be shot noise, which is as "
              "small as the binomial predicts.", ""]
    if noisy and "fit" in noisy:
        lines += [f"Under the noise model the estimates shrink towards 0 (estimate = {_line(noisy['fit'])}): gate "
                  "noise is a bias that more shots do not remove; the correlation with the exact map stays "
                  f"{_f(noisy['correlation']['quantum_vs_classical_squared_normalised'], 3)} because the "
                  "shrinkage is nearly linear.", ""]
    return lines + [_meta(sec, name) for sec, name in runs] + [""]


def _backprop(metrics: dict) -> list[str]:
    runs = [(metrics[f"backprop{k}"], name) for k, name in VARIANTS if f"backprop{k}" in metrics]
    if not runs:
        return ["## V-B Backpropagation (Fig. 4)", "", "*Not run yet: `qucnn reproduce backprop`.*", ""]
    base = runs[0][0]
    sampler = metrics.get("backprop")  # the torch run: shots drawn from the exact expectations, not circuits
    lines = ["## V-B Backpropagation (Fig. 4)", "", *_images(runs), "",
             f"One filter (ansatz, {base['qubits']} qubits, {base['layers']} layers, {base['parameters']} "
             f"parameters, seeded angles) against the fixed data state: {base['data_state_description']}. "
             f"Exact fidelity F = {_f(base['checks']['exact_fidelity'])}. Backpropagated value g = "
             f"{base['upstream']}, scale c = {base['scale_c']}, so the ancilla carries delta = {base['delta']}. "
             f"Checks: exact parameter shift vs autograd {_f(base['checks']['parameter_shift_exact_error'], 2)}; "
             f"Eq. 15 on the 10-qubit circuit simulated gate by gate (`<Z_a> = delta F`) "
             f"{_f(base['checks']['eq15_circuit_error'], 2)}.", "",
             "Paper: \"given sufficient shots, the gradient observed from QuCNN and Post Processed converge to "
             "similar values; lower shot numbers are much noisier\". Measured (per shot count: the largest "
             "|mean - exact| over the parameters estimated, in standard errors of the mean, and measured/theoretical "
             "variance averaged over parameters, which should be 1):", "",
             f"| Backend | Shots | Repeats | Parameters | Method | {cell('max |mean - exact|')} / SE | variance ratio | "
             "mean theoretical std |",
             "|---|---|---|---|---|---|---|---|"]
    for sec, name in runs:
        for s in sec["summary"]:
            lines.append(f"| {name} | {s['shots']:,} | {s['repeats']} | {s.get('parameters', sec['parameters'])} | "
                         f"{s['method']} | "
                         f"{_f(s['max_abs_error_in_se'], 3)} | {_f(s['variance_ratio_mean'], 3)} "
                         f"(sd over parameters {_f(s['variance_ratio_sd'], 2)}) | {_f(s['mean_theory_std'], 3)} |")
    for sec, name in runs:
        worst = max(s["max_abs_error_in_se"] for s in sec["summary"])
        repeats = max(s["repeats"] for s in sec["summary"])
        if sec is sampler:  # the torch back end draws its shots from the exact expectations
            text = (f"a consistency check of our sampler, not a validation (its shots are drawn from the exact "
                    f"expectations): the largest deviation is {worst:.2f} standard errors"
                    + ("; 5 is the bound a correct estimator passes." if worst < 5 else
                       ", more than shot noise explains: the sampler disagrees with the exact gradient."))
        elif "noise" in name:
            text = (f"the largest deviation is {worst:.2f} standard errors with {repeats} repeats per point: too few "
                    "to resolve the bias the noise model puts on every fidelity (the forward run shows it).")
        else:
            text = (f"the validation (shots from the circuits themselves): the largest deviation is {worst:.2f} "
                    "standard errors" + (", so the estimators converge to the exact gradient, not merely to each "
                                         "other." if worst < 5 else ", more than shot noise explains."))
        lines += ["", f"*{name}*: {text}"]
    gap = base.get("variance_gap") or []
    if gap:
        lines += ["", "**What Eq. 17 costs in variance.** Each Eq. 17 circuit measures `delta F` with variance "
                  "`(1 - delta^2 F^2)/S`; scaled by c that is `c^2 (1 - delta^2 F^2)/S`, against "
                  "`g^2 (1 - F^2)/S = c^2 delta^2 (1 - F^2)/S` for the post-processed product. The difference is "
                  "`c^2 (1 - delta^2)/S` per circuit, whatever F; a gradient (half the difference of a shifted "
                  "pair) pays `c^2 (1 - delta^2)/(2S)`. Measured (Fig. 4c):", "",
                  "| Shots | measured Var(Eq. 17) - Var(post-processed), mean over parameters | standard error | "
                  "formula c^2 (1 - delta^2)/(2S) | (measured - formula)/SE |", "|---|---|---|---|---|"]
        for e in gap:
            lines.append(f"| {e['shots']:,} | {_f(e['measured_mean'], 4)} | {_f(e['se'], 2)} | {_f(e['formula'], 4)} "
                         f"| {_f(e['z'], 2)} |")
        lines += ["", f"(Table: {runs[0][1]}" + (", a check of our sampler.)" if base is sampler else ".)")]
        for sec, name in runs[1:]:
            other = sec.get("variance_gap") or []
            if other and "noise" not in name:
                ratios = [e["measured_mean"] / e["formula"] for e in other]
                lines += [f"{name}, the validation: measured / formula {min(ratios):.2f} to {max(ratios):.2f} over "
                          f"the shot counts, largest `|z|` {max(abs(e['z']) for e in other):.2f}."]
    lines += ["", "**Eq. 17 is classically equivalent to post-processing.** The ancilla b is touched only by "
              "`RY(beta)` and then the CNOT into a, right before a is measured. Measuring b first gives the same "
              "joint statistics, so the circuit is an ordinary SWAP test whose outcome is multiplied by an "
              "independent random sign with mean delta: a classical coin flip. The \"entanglement\" does "
              "nothing a classical multiplication would not, and replacing the coin's expectation (delta) by the "
              "coin adds exactly the variance above. With the layer's default `c = max_j |g_j|` "
              "('entanglement-cmax' here) a single output has delta = +-1 and no extra variance; with many "
              "outputs most `|delta_j|` are small and the gap is paid on nearly every circuit.", ""]
    return lines + [_meta(sec, name) for sec, name in runs] + [""]


def _learn(metrics: dict) -> list[str]:
    sec = metrics.get("state_learning")
    if sec is None or "summary" not in sec:
        return ["## V-C State learning (Fig. 6)", "", "*Not run yet: `qucnn reproduce learn`.*", ""]
    counts = sec["targets"]
    lines = ["## V-C State learning (Fig. 6)", "", *_images([(sec, "")]), "",
             f"Targets: {sec['target_description']} ({', '.join(f'{n} {k}' for k, n in counts.items() if n)}). "
             f"{sec['optimizer']} on 1 - F, {sec['iterations']} iterations, {sec['restarts']} seeded restarts per "
             f"target and depth, gradient: {sec['gradient']}. Per target we keep the best restart (is the state "
             "expressible?) and the median restart (does the optimiser get there?).", "",
             "| Targets | Layers L (angles) | best restart: min / **median** / max over targets | median restart: "
             "min / median / max |", "|---|---|---|---|"]
    for kind, depths in sec["summary"].items():
        for key in sorted(depths):
            q, m = depths[key], sec["summary_median_restart"][kind][key]
            lines.append(f"| {kind} ({q['n']}) | {key} ({sec['parameters'][key]}) | {_f(q['min'], 3)} / "
                         f"**{_f(q['median'], 3)}** / {_f(q['max'], 3)} | {_f(m['min'], 3)} / {_f(m['median'], 3)} / "
                         f"{_f(m['max'], 3)} |")
    lines += ["", "Per target (best restart; in brackets the median restart):", "",
              "| Target | L = 1 | L = 2 | L = 3 |", "|---|---|---|---|"]
    for t in sec["filters"]:
        cells = [f"{_f(t['final_fidelity'][k], 4)} ({_f(t['median_final_fidelity'][k], 3)})"
                 for k in sorted(t["final_fidelity"])]
        lines.append(f"| {t['name']} | " + " | ".join(cells) + " |")
    lines += ["", "Paper: \"these states are in fact expressible as a shallow circuit comprised of n = [1-3]\" "
              "layers, \"the ideal trained unitaries are not overly complex\", from one trained filter and no "
              "number. Over several trained filters the answer depends on the depth: one layer (a product state "
              "pushed through a fixed CNOT ring, 8 angles) reaches only part of each filter; three layers (24 "
              "angles, against the 30 real parameters of a 4-qubit state) come close for every target. Compare "
              "the trained filters with the random references at the same depth: where they match, the trained "
              "filters are no simpler than a generic state.", "", _meta(sec), ""]
    return lines


def _circuits(metrics: dict) -> list[str]:
    sec = metrics.get("circuits")
    if sec is None:
        return ["## Circuits (Fig. 1, 2, 5)", "", "*Not run yet: `qucnn reproduce circuits`.*", ""]
    names = [k for k, v in sec.items() if isinstance(v, dict) and "qubits" in v]
    how = sec.get("transpile")
    lines = ["## Circuits (Fig. 1, 2, 5)", "", f"Drawn with: {sec['drawer']}.", "",
             "| Circuit | Figure | Qubits | Gates as drawn | CNOTs as drawn | CSWAPs | Depth as drawn | "
             "CX, all-to-all | CX, on a line |", "|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        c = sec[name]
        all_to_all = c.get("cx_all_to_all", c.get("transpiled_cnots"))  # metrics of earlier versions: one count
        lines.append(f"| {name} | [figure]({c['figure']}) | {c['qubits']} | {c['gates']} | "
                     f"{c['cnots']} | {c['cswaps']} | {c['depth']} | {_f(all_to_all)} | {_f(c.get('cx_line'))} |")
    cx = (f"*CX*: what the basis `{', '.join(how['basis'])}` needs after a transpile with optimisation level "
          f"{how['optimization_level']}, seed {how['seed']}, with all-to-all connectivity and on a line of the "
          "circuit's qubits (routing SWAPs included), as `qucnn circuits` counts its circuit kinds (n/a: Qiskit "
          "not installed)." if how else
          "*CX*: all-to-all after a transpile with optimisation level 1, as earlier versions of qucnn counted (run "
          "`qucnn reproduce circuits` again for the counts of `qucnn circuits`).")
    lines += ["", "*As drawn*: our registry ops, where a CSWAP or a state-preparation `UNITARY` is one gate and the "
              "CNOTs are only the explicit ones (the ansatz's ring, Eq. 17's CNOT). " + cx + " A 16x16 SVD unitary "
              "costs far more CX than the Mottonen ladder that prepares the same state.", ""] + \
        [f"![{name}]({sec[name]['figure']})" for name in names] + ["", _meta(sec), ""]
    return lines


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
    rows = []
    fwd = metrics.get("forward") or metrics.get("forward_aer") or metrics.get("forward_aer_noise")
    aer = metrics.get("forward_aer")
    if fwd:
        rows.append(f"| V-A, Fig. 2/3 | the SWAP test measures {cell('|<f|x>|^2')} | full 9-qubit circuit, gate by gate: "
                    f"max error {_f(fwd['circuit_check']['max_abs_error'], 2)}"
                    + (f"; Qiskit Aer, {aer['circuits_run']:,} circuits x {aer['shots']:,} shots: "
                       f"{100 * aer['within_3_sigma_fraction']:.2f}% within 3 standard errors, largest "
                       f"{_f(aer['max_sigma_error'], 3)}" if aer else "; Aer: not run in this folder") + " |")
        rows.append(f"| V-A, Fig. 3 | QuCNN maps replicate the classical maps, noisy edges from sampling | they are "
                    "the classical map squared and divided by the patch norm: correlation "
                    f"{_f(fwd['correlation']['quantum_vs_classical_squared_normalised'])} "
                    f"({_f(fwd['correlation']['quantum_vs_classical'])} with the raw map) |")
        rows.append(f"| V-A, Fig. 5 | an SVD unitary prepares the ideal convolutional state | "
                    f"{cell('max |W|0> - f|')} = {_f(fwd['state_prep_error'], 2)} |")
    bp = metrics.get("backprop") or metrics.get("backprop_aer") or metrics.get("backprop_aer_noise")
    if bp:
        top = max(bp["shot_counts"])
        worst = {s["method"]: s["max_abs_error_in_se"] for s in bp["summary"] if s["shots"] == top}
        gap = bp.get("variance_gap") or []
        extra = ("; Eq. 17 adds variance c^2 (1 - delta^2)/(2S) per gradient (measured/formula "
                 + ", ".join(f"{e['measured_mean'] / e['formula']:.2f}" for e in gap) + ") and is classically "
                 "equivalent to post-processing") if gap else ""
        rows.append(f"| V-B, Fig. 4 | Eq. 17 and the post-processed shift converge with shots | both unbiased: at "
                    f"{top:,} shots {cell('max |mean - exact|')} = {_f(worst.get('entanglement'), 3)} SE (Eq. 17), "
                    f"{_f(worst.get('parameter-shift'), 3)} SE (post-processed){extra} |")
    sl = metrics.get("state_learning")
    if sl and "summary" in sl:
        t = sl["summary"].get("trained")
        if t:
            rows.append(f"| V-C, Fig. 6 | the ideal state is learnable by L = 1..3 layers | {t['1']['n']} trained "
                        "filters, best restart, median [min, max]: " + ", ".join(
                            f"L={k}: {_f(q['median'], 3)} [{_f(q['min'], 3)}, {_f(q['max'], 3)}]"
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
        head += [f"Last command: `qucnn reproduce {' '.join(argv)}` ({_f(last.get('wall_time_s'), 3)} s).", ""]
    versions = metrics.get("versions")
    if versions:
        head += ["Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + ".", ""]
    body = _summary(metrics) + _forward(metrics) + _backprop(metrics) + _learn(metrics) + _circuits(metrics) + NOTES
    return "\n".join(head + body)


def write_report(out: Path, metrics: dict) -> Path:
    """Write :func:`build_report` of ``metrics`` as ``OUT/report.md``; return its path."""
    path = Path(out) / REPORT_FILE
    atomic_write_text(path, build_report(metrics))
    return path


__all__ = ["build_report", "write_report"]
