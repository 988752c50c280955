"""Reproductions of the paper's experiments, and the tools to go past them."""
