"""The sections of report.md on the paper's Section V (:func:`forward_section`, :func:`backprop_section`,
:func:`learn_section`) and on the circuits (:func:`circuits_section`), each a list of Markdown lines built from
metrics.json alone (formatted by :mod:`qucnn.experiments.report_format`). :mod:`qucnn.experiments.report` puts
them together.

Example:
    >>> forward_section({})[2]
    '*Not run yet: `qucnn reproduce forward`.*'
"""

from __future__ import annotations

from ..utils.markdown import cell
from .report_format import figure_links, fit_text, number, run_note

#: Metrics keys' suffixes of one experiment's runs, with the name the report gives each.
VARIANTS = (("", "torch, binomial shot draws"), ("_aer", "Qiskit Aer"), ("_aer_noise", "Qiskit Aer + noise model"))


def forward_section(metrics: dict) -> list[str]:
    """Section V-A: the classical network, the checks of the circuits, our sampler's consistency, and what the
    quantum maps are, from the ``forward*`` runs of ``metrics``.

    Example:
        >>> forward_section({})[0]
        '## V-A Forward pass (Fig. 3, Fig. 5)'
    """
    runs = [(metrics[f"forward{k}"], name) for k, name in VARIANTS if f"forward{k}" in metrics]
    if not runs:
        return ["## V-A Forward pass (Fig. 3, Fig. 5)", "", "*Not run yet: `qucnn reproduce forward`.*", ""]
    base = runs[0][0]
    noisy = metrics.get("forward_aer_noise")
    lines = ["## V-A Forward pass (Fig. 3, Fig. 5)", "",
             *figure_links(runs), "",
             f"Classical network: {base['classical']['architecture']}, {base['classical']['optimizer']}, "
             f"{base['classical']['epochs']} epochs on {base['classical']['train_images']} training images. "
             f"Test accuracy **{number(base['classical_test_accuracy'])}** on {base['classical']['test_images']} "
             "test images (the paper gives none). The filter has no bias, so the classical map is Eq. 1 exactly.",
             "", *_circuit_checks(base, metrics.get("forward_aer"), noisy)]
    t = metrics.get("forward")
    if t:
        lines += ["", "**Consistency of our own sampler (not a validation).** The torch back end draws "
                  "`n0 ~ Binomial(S, (1 + F)/2)` from the exact F, so the following only checks that the sampler "
                  "does what it says:", "",
                  f"- {t['circuits_run']:,} non-zero patches of {t['images']} images x {t['shots']:,} shots "
                  f"(all-zero patches give 0 and are not run): largest error {number(t['max_sigma_error'], 3)} "
                  f"standard errors, {100 * t['within_3_sigma_fraction']:.2f}% within 3 (normal: "
                  f"{100 * t['within_3_sigma_expected']:.2f}%), mean {number(t['mean_sigma_error'], 2)}, rms "
                  f"{number(t['rms_sigma_error'], 3)}, fit estimate = {fit_text(t.get('fit'))}."]
    lines += ["", *_what_the_maps_are(base["correlation"])]
    if noisy and "fit" in noisy:
        lines += [f"Under the noise model the estimates shrink towards 0 (estimate = {fit_text(noisy['fit'])}): "
                  "gate noise is a bias that more shots do not remove; the correlation with the exact map stays "
                  f"{number(noisy['correlation']['quantum_vs_classical_squared_normalised'], 3)} because the "
                  "shrinkage is nearly linear.", ""]
    return lines + [run_note(sec, name) for sec, name in runs] + [""]


def _circuit_checks(base: dict, aer: dict | None, noisy: dict | None) -> list[str]:
    """The table of checks against the circuits themselves: gate by gate, then Aer without and with noise."""
    lines = ["**Validation: the circuits themselves.** These checks compare our closed form with circuits "
             "that are simulated gate by gate or run by an independent simulator (Qiskit Aer):", "",
             "| Check | Measured | Run by |", "|---|---|---|",
             f"| {cell('W|0> is the ideal convolutional state (Fig. 5)')} | {cell('max |W|0> - f|')} = "
             f"{number(base['state_prep_error'], 2)}, {cell('max |W^H W - I|')} = "
             f"{number(base['unitary_error'], 2)} | our statevector simulator |",
             f"| the 9-qubit SWAP-test circuit (SVD unitaries, CSWAPs) measures {cell('|<f|x>|^2')} | "
             f"{base['circuit_check']['patches']} patches, gate by gate: {cell('max |<Z_a> - F|')} = "
             f"{number(base['circuit_check']['max_abs_error'], 2)} | our statevector simulator |"]
    if aer:
        lines.append(f"| shots from the circuits, not from F | {aer['circuits_run']:,} circuits x {aer['shots']:,} "
                     f"shots: {100 * aer['within_3_sigma_fraction']:.2f}% within 3 standard errors of F "
                     f"(normal: {100 * aer['within_3_sigma_expected']:.2f}%), largest "
                     f"{number(aer['max_sigma_error'], 3)}; mean {number(aer['mean_sigma_error'], 2)}, rms "
                     f"{number(aer['rms_sigma_error'], 3)}; fit estimate = {fit_text(aer.get('fit'))} | Qiskit Aer |")
    else:
        lines.append("| shots from the circuits, not from F | *not run in this folder: `qucnn reproduce forward "
                     "--backend aer`* | Qiskit Aer |")
    if noisy:
        lines.append(f"| the same under the noise model | {noisy['circuits_run']:,} circuits: estimate = "
                     f"{fit_text(noisy.get('fit'))}; {100 * noisy['within_3_sigma_fraction']:.1f}% within 3 shot "
                     "standard errors | Qiskit Aer + noise |")
    return lines


def _what_the_maps_are(corr: dict) -> list[str]:
    """What the quantum maps compute, against the paper's "replicate", with the run's correlations."""
    return ["**What the quantum maps are.** Paper: the quantum maps \"replicate\" the classical ones. "
            "QuCNN outputs `|<f|x>|^2 = Conv(X,F)^2 / (|F|^2 |x|^2)` (max difference from the exact fidelity "
            f"{number(corr['classical_squared_normalised_vs_exact_fidelity_max_abs_diff'], 2)}): the classical map "
            "**squared and divided by the patch norm**, not the classical map. Correlation of the shot estimates "
            f"with that expression: **{number(corr['quantum_vs_classical_squared_normalised'])}**; with "
            f"Conv(X,F)^2: {number(corr.get('quantum_vs_classical_squared'))}; with Conv(X,F): "
            f"{number(corr['quantum_vs_classical'])}; with ReLU(Conv(X,F)): "
            f"{number(corr['quantum_vs_classical_relu'])} (how close the raw map comes depends on "
            "the filter: these numbers are for this one). The map loses the sign (an anti-aligned patch scores "
            "as high as an aligned one) and the brightness (a faint patch at a stroke's border scores like a "
            "bright one of the same shape), so structure at the borders of strokes is already in the exact "
            "fidelity map (Fig. 3, bottom left): the paper's \"noisy edges\" need not be shot noise, which is as "
            "small as the binomial predicts.", ""]


def backprop_section(metrics: dict) -> list[str]:
    """Section V-B: the filter and its exact checks, the estimators' errors and variances per shot count, the
    verdict on each run, what Eq. 17 costs in variance, and why it equals post-processing, from the
    ``backprop*`` runs of ``metrics``.

    Example:
        >>> backprop_section({})[0]
        '## V-B Backpropagation (Fig. 4)'
    """
    runs = [(metrics[f"backprop{k}"], name) for k, name in VARIANTS if f"backprop{k}" in metrics]
    if not runs:
        return ["## V-B Backpropagation (Fig. 4)", "", "*Not run yet: `qucnn reproduce backprop`.*", ""]
    base = runs[0][0]
    sampler = metrics.get("backprop")  # the torch run: shots drawn from the exact expectations, not circuits
    lines = ["## V-B Backpropagation (Fig. 4)", "", *figure_links(runs), "", _backprop_setup(base), "",
             "Paper: \"given sufficient shots, the gradient observed from QuCNN and Post Processed converge to "
             "similar values; lower shot numbers are much noisier\". Measured (per shot count: the largest "
             "|mean - exact| over the parameters estimated, in standard errors of the mean, and measured/theoretical "
             "variance averaged over parameters, which should be 1):", "",
             f"| Backend | Shots | Repeats | Parameters | Method | {cell('max |mean - exact|')} / SE | "
             "variance ratio | mean theoretical std |",
             "|---|---|---|---|---|---|---|---|"]
    for sec, name in runs:
        for s in sec["summary"]:
            lines.append(f"| {name} | {s['shots']:,} | {s['repeats']} | {s.get('parameters', sec['parameters'])} | "
                         f"{s['method']} | "
                         f"{number(s['max_abs_error_in_se'], 3)} | {number(s['variance_ratio_mean'], 3)} "
                         f"(sd over parameters {number(s['variance_ratio_sd'], 2)}) | "
                         f"{number(s['mean_theory_std'], 3)} |")
    for sec, name in runs:
        lines += ["", f"*{name}*: {_backprop_verdict(sec, name, sec is sampler)}"]
    lines += _variance_gap(runs, base is sampler)
    lines += ["", EQ17_IS_POST_PROCESSING, ""]
    return lines + [run_note(sec, name) for sec, name in runs] + [""]


def _backprop_setup(base: dict) -> str:
    """The filter, the data state, the backpropagated value and the exact checks of the run."""
    return (f"One filter (ansatz, {base['qubits']} qubits, {base['layers']} layers, {base['parameters']} "
            f"parameters, seeded angles) against the fixed data state: {base['data_state_description']}. "
            f"Exact fidelity F = {number(base['checks']['exact_fidelity'])}. Backpropagated value g = "
            f"{base['upstream']}, scale c = {base['scale_c']}, so the ancilla carries delta = {base['delta']}. "
            f"Checks: exact parameter shift vs autograd {number(base['checks']['parameter_shift_exact_error'], 2)}; "
            f"Eq. 15 on the 10-qubit circuit simulated gate by gate (`<Z_a> = delta F`) "
            f"{number(base['checks']['eq15_circuit_error'], 2)}.")


def _backprop_verdict(sec: dict, name: str, is_sampler: bool) -> str:
    """What one run's largest deviation says: a check of our sampler (the torch run draws its shots from the
    exact expectations), too few repeats to see the noise's bias, or the validation against the circuits."""
    worst = max(s["max_abs_error_in_se"] for s in sec["summary"])
    repeats = max(s["repeats"] for s in sec["summary"])
    if is_sampler:
        return (f"a consistency check of our sampler, not a validation (its shots are drawn from the exact "
                f"expectations): the largest deviation is {worst:.2f} standard errors"
                + ("; 5 is the bound a correct estimator passes." if worst < 5 else
                   ", more than shot noise explains: the sampler disagrees with the exact gradient."))
    if "noise" in name:
        if worst >= 5:
            return (f"the largest deviation is {worst:.2f} shot standard errors with {repeats} repeats per point: "
                    "more than shot noise explains, the bias the noise model puts on every fidelity (the forward "
                    "run shows it as a shrinkage towards 0) reaches the gradients, and more shots do not remove it.")
        return (f"the largest deviation is {worst:.2f} standard errors with {repeats} repeats per point: too few "
                "to resolve the bias the noise model puts on every fidelity (the forward run shows it).")
    return (f"the validation (shots from the circuits themselves): the largest deviation is {worst:.2f} "
            "standard errors" + (", so the estimators converge to the exact gradient, not merely to each "
                                 "other." if worst < 5 else ", more than shot noise explains."))


def _variance_gap(runs: list[tuple[dict, str]], base_is_sampler: bool) -> list[str]:
    """Eq. 17's extra variance over post-processing, measured against its formula (Fig. 4c), for the first run
    in a table and as a range for the noiseless circuit runs after it; nothing when the first run has none."""
    gap = runs[0][0].get("variance_gap") or []
    if not gap:
        return []
    lines = ["", "**What Eq. 17 costs in variance.** Each Eq. 17 circuit measures `delta F` with variance "
             "`(1 - delta^2 F^2)/S`; scaled by c that is `c^2 (1 - delta^2 F^2)/S`, against "
             "`g^2 (1 - F^2)/S = c^2 delta^2 (1 - F^2)/S` for the post-processed product. The difference is "
             "`c^2 (1 - delta^2)/S` per circuit, whatever F; a gradient (half the difference of a shifted "
             "pair) pays `c^2 (1 - delta^2)/(2S)`. Measured (Fig. 4c):", "",
             "| Shots | measured Var(Eq. 17) - Var(post-processed), mean over parameters | standard error | "
             "formula c^2 (1 - delta^2)/(2S) | (measured - formula)/SE |", "|---|---|---|---|---|"]
    for e in gap:
        lines.append(f"| {e['shots']:,} | {number(e['measured_mean'], 4)} | {number(e['se'], 2)} | "
                     f"{number(e['formula'], 4)} | {number(e['z'], 2)} |")
    lines += ["", f"(Table: {runs[0][1]}" + (", a check of our sampler.)" if base_is_sampler else ".)")]
    for sec, name in runs[1:]:
        other = sec.get("variance_gap") or []
        if other and "noise" not in name:
            ratios = [e["measured_mean"] / e["formula"] for e in other]
            lines += [f"{name}, the validation: measured / formula {min(ratios):.2f} to {max(ratios):.2f} over "
                      f"the shot counts, largest `|z|` {max(abs(e['z']) for e in other):.2f}."]
    return lines


#: Why Eq. 17's "entanglement" is a classical coin flip (the paragraph after the variance table).
EQ17_IS_POST_PROCESSING = (
    "**Eq. 17 is classically equivalent to post-processing.** The ancilla b is touched only by "
    "`RY(beta)` and then the CNOT into a, right before a is measured. Measuring b first gives the same "
    "joint statistics, so the circuit is an ordinary SWAP test whose outcome is multiplied by an "
    "independent random sign with mean delta: a classical coin flip. The \"entanglement\" does "
    "nothing a classical multiplication would not, and replacing the coin's expectation (delta) by the "
    "coin adds exactly the variance above. With the layer's default `c = max_j |g_j|` "
    "('entanglement-cmax' here) a single output has delta = +-1 and no extra variance; with many "
    "outputs most `|delta_j|` are small and the gap is paid on nearly every circuit."
)


def learn_section(metrics: dict) -> list[str]:
    """Section V-C: the fidelity the ansatz reaches for each target state and depth (best and median restart),
    against the paper's claim that one to three layers suffice, from ``metrics["state_learning"]``.

    Example:
        >>> learn_section({})[0]
        '## V-C State learning (Fig. 6)'
    """
    sec = metrics.get("state_learning")
    if sec is None or "summary" not in sec:
        return ["## V-C State learning (Fig. 6)", "", "*Not run yet: `qucnn reproduce learn`.*", ""]
    counts = sec["targets"]
    lines = ["## V-C State learning (Fig. 6)", "", *figure_links([(sec, "")]), "",
             f"Targets: {sec['target_description']} ({', '.join(f'{n} {k}' for k, n in counts.items() if n)}). "
             f"{sec['optimizer']} on 1 - F, {sec['iterations']} iterations, {sec['restarts']} seeded restarts per "
             f"target and depth, gradient: {sec['gradient']}. Per target we keep the best restart (is the state "
             "expressible?) and the median restart (does the optimiser get there?).", "",
             "| Targets | Layers L (angles) | best restart: min / **median** / max over targets | median restart: "
             "min / median / max |", "|---|---|---|---|"]
    for kind, depths in sec["summary"].items():
        for key in sorted(depths):
            q, m = depths[key], sec["summary_median_restart"][kind][key]
            lines.append(f"| {kind} ({q['n']}) | {key} ({sec['parameters'][key]}) | {number(q['min'], 3)} / "
                         f"**{number(q['median'], 3)}** / {number(q['max'], 3)} | {number(m['min'], 3)} / "
                         f"{number(m['median'], 3)} / {number(m['max'], 3)} |")
    lines += ["", "Per target (best restart; in brackets the median restart):", "",
              "| Target | L = 1 | L = 2 | L = 3 |", "|---|---|---|---|"]
    for t in sec["filters"]:
        cells = [f"{number(t['final_fidelity'][k], 4)} ({number(t['median_final_fidelity'][k], 3)})"
                 for k in sorted(t["final_fidelity"])]
        lines.append(f"| {t['name']} | " + " | ".join(cells) + " |")
    lines += ["", "Paper: \"these states are in fact expressible as a shallow circuit comprised of n = [1-3]\" "
              "layers, \"the ideal trained unitaries are not overly complex\", from one trained filter and no "
              "number. Over several trained filters the answer depends on the depth: one layer (a product state "
              "pushed through a fixed CNOT ring, 8 angles) reaches only part of each filter; three layers (24 "
              "angles, against the 30 real parameters of a 4-qubit state) come close for every target. Compare "
              "the trained filters with the random references at the same depth: where they match, the trained "
              "filters are no simpler than a generic state.", "", run_note(sec), ""]
    return lines


def circuits_section(metrics: dict) -> list[str]:
    """The circuits of Fig. 1, 2 and 5: qubits, gates, CNOTs, CSWAPs and depth as drawn, and the CX a transpile
    needs, from ``metrics["circuits"]``.

    Example:
        >>> circuits_section({})[0]
        '## Circuits (Fig. 1, 2, 5)'
    """
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
                     f"{c['cnots']} | {c['cswaps']} | {c['depth']} | {number(all_to_all)} | "
                     f"{number(c.get('cx_line'))} |")
    cx = (f"*CX*: what the basis `{', '.join(how['basis'])}` needs after a transpile with optimisation level "
          f"{how['optimization_level']}, seed {how['seed']}, with all-to-all connectivity and on a line of the "
          "circuit's qubits (routing SWAPs included), as `qucnn circuits` counts its circuit kinds (n/a: Qiskit "
          "not installed)." if how else
          "*CX*: all-to-all after a transpile with optimisation level 1, as earlier versions of qucnn counted (run "
          "`qucnn reproduce circuits` again for the counts of `qucnn circuits`).")
    lines += ["", "*As drawn*: our registry ops, where a CSWAP or a state-preparation `UNITARY` is one gate and the "
              "CNOTs are only the explicit ones (the ansatz's ring, Eq. 17's CNOT). " + cx + " A 16x16 SVD unitary "
              "costs far more CX than the Mottonen ladder that prepares the same state.", ""] + \
        [f"![{name}]({sec[name]['figure']})" for name in names] + ["", run_note(sec), ""]
    return lines


__all__ = ["EQ17_IS_POST_PROCESSING", "VARIANTS", "backprop_section", "circuits_section", "forward_section",
           "learn_section"]
