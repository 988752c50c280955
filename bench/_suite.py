"""Helpers shared by the benchmark suites."""

import fobmaml as fm


def quadratic_estimators(inner: fm.InnerLoop) -> dict:
    """Every estimator, as the issue and README name them."""
    return {
        "MAML": fm.MAML(inner),
        "FOMAML": fm.FOMAML(inner),
        "Reptile": fm.Reptile(inner),
        "IMAML(cg=5)": fm.IMAML(inner, cg_steps=5),
        "HFMAML": fm.HFMAML(inner),
        "FOBMAML(forward)": fm.FOBMAML(inner, delta=1e-3, scheme="forward"),
        "FOBMAML(symmetric)": fm.FOBMAML(inner, delta=1e-3, scheme="symmetric"),
        "FOBMAML(symmetric, linear)": fm.FOBMAML(
            inner, delta=1e-3, scheme="symmetric", perturbation="linear"
        ),
        "Exact": fm.Exact(inner),
    }
