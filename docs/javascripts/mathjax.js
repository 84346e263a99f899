// MathJax 3 for the equations of every page: pymdownx.arithmatex (generic) wraps them in \( \) and \[ \] inside
// elements of class "arithmatex" (docs/hooks.py does the same for the tutorial's notebook cells); nothing else
// on a page is read as math.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};

// Material emits document$ for every page it shows (instant navigation included): typeset it.
document$.subscribe(() => {
  MathJax.startup.output.clearCache();
  MathJax.typesetClear();
  MathJax.texReset();
  MathJax.typesetPromise();
});
