"""The figure of the barren-plateau study: variance against qubits (log y) per depth, with the Haar
(2-design) reference and the shot-noise levels, and the fitted decay base against depth.

Example:
    result = plateau_study(images, [2, 4], [1, 2], samples=100)
    plot_plateau(result, "results/plateau/plateau.png")
"""

from __future__ import annotations

from pathlib import Path

from ..utils.files import atomic_write
from ..utils.plotting import pyplot as _pyplot
from .plateau import PARAMS, SHOT_BUDGETS, shot_noise_variance


def plot_plateau(result: dict, path: str | Path) -> Path:
    """Draw ``result`` (from :func:`qucnn.analysis.plateau_study`) as a 2x2 PNG at ``path``.

    Panels: ``Var[dF/dtheta]`` of the first and of the last parameter, ``Var[F]``, each against the
    qubit count with one line per depth (error bars: one standard error), the Haar reference (black
    dashes) and the shot-noise variance ``1/(2S)`` (grey dots); and the fitted decay base ``b``
    (``Var ~ b**-n``) against depth, with the Haar value ``b = 4``.
    """
    plt = _pyplot()
    rows = result["rows"]
    depths = sorted({r["depth"] for r in rows})
    qubits = sorted({r["qubits"] for r in rows})
    cmap = plt.get_cmap("viridis")
    colour = {L: cmap(i / max(len(depths) - 1, 1)) for i, L in enumerate(depths)}
    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5), layout="constrained")
    panels = [(axes[0, 0], "first", "var_grad", "var_grad_stderr", "haar_var_grad",
               r"Var[$\partial F/\partial\theta_{first}$] (RX, qubit 0, layer 1)"),
              (axes[0, 1], "last", "var_grad", "var_grad_stderr", "haar_var_grad",
               r"Var[$\partial F/\partial\theta_{last}$] (RZ, qubit n-1, layer L)"),
              (axes[1, 0], "first", "var_fidelity", "var_fidelity_stderr", "haar_var_fidelity",
               r"Var[$F$], $F = |\langle f(\theta)|x\rangle|^2$")]
    for ax, param, key, err_key, haar_key, title in panels:
        for L in depths:
            sel = sorted((r for r in rows if r["depth"] == L and r["param"] == param), key=lambda r: r["qubits"])
            ax.errorbar([r["qubits"] for r in sel], [r[key] for r in sel], yerr=[r[err_key] for r in sel],
                        color=colour[L], marker="o", ms=3, lw=1, capsize=2)
        ref = sorted((r for r in rows if r["param"] == param and r["depth"] == depths[0]), key=lambda r: r["qubits"])
        # drawn on top: the deep-circuit curves lie on it
        ax.plot([r["qubits"] for r in ref], [r[haar_key] for r in ref], color="red", ls="--", lw=1.5,
                zorder=5, label="Haar-random filter (2-design)")
        if key == "var_grad":
            for shots, style in zip(SHOT_BUDGETS, (":", "-.")):
                ax.axhline(shot_noise_variance(shots), color="grey", ls=style, lw=1.2,
                           label=f"shot noise 1/(2S), S={shots}")
        ax.set_yscale("log")
        ax.set_xticks(qubits)
        ax.set_xlabel("qubits n")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.25)
    for ax in (axes[0, 0], axes[0, 1], axes[1, 0]):
        ax.legend(fontsize=7, loc="lower left")
    if len(depths) > 1:
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(depths[0], depths[-1]))
        fig.colorbar(sm, ax=[axes[0, 0], axes[0, 1], axes[1, 0]], label="ansatz depth L (layers)",
                     shrink=0.6, pad=0.01)
    _plot_decay_bases(axes[1, 1], result, qubits)
    cfg = result.get("config", {})
    fig.suptitle(f"QuCNN filter gradient variance: {cfg.get('samples', '?')} samples per cell "
                 f"(uniform angles x MNIST patches), channels={cfg.get('channels', 1)}, seed={cfg.get('seed', '?')}",
                 fontsize=11)
    path = Path(path)
    atomic_write(path, lambda fh: fig.savefig(fh, format=path.suffix.lstrip(".") or "png", dpi=120))
    plt.close(fig)
    return path


def _plot_decay_bases(ax, result: dict, qubits: list[int]) -> None:
    """The fitted decay base ``b`` against depth, per parameter and for ``Var F``, beside the Haar values."""
    series = [(f"dF/dtheta, {p}", [f for f in result["fits"] if f["param"] == p], m, c)
              for p, m, c in zip(PARAMS, ("o", "s"), ("tab:blue", "tab:orange"))]
    series.append(("Var F", result.get("fidelity_fits", []), "^", "tab:green"))
    for label, fits, marker, col in series:
        if not fits:
            continue
        ax.errorbar([f["depth"] for f in fits], [f["decay_base"] for f in fits], color=col,
                    yerr=[f["decay_base_stderr"] or 0.0 for f in fits], marker=marker, capsize=3, label=label)
        ax.plot([f["depth"] for f in fits], [f["haar_decay_base"] for f in fits], ls="--", color=col, lw=1,
                label=f"{label}: Haar over the same n")
    ax.axhline(4.0, color="k", ls=":", lw=1, label="Haar, n -> inf: b = 4")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("ansatz depth L (layers)")
    ax.set_ylabel("decay base b  (Var ~ b^-n)")
    ax.set_title(f"fitted decay base over n = {qubits}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.25)


__all__ = ["plot_plateau"]
