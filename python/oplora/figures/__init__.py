"""Figures drawn with matplotlib: matrix-factorisation curves (`plots`) and report figures
(`report_figures`, run by the SDK as `python -m oplora.figures.report_figures SPEC.json OUT_DIR`)."""
