"""Task families and task samplers."""

from .quadratic import quadratic_tasks

__all__ = ["quadratic_tasks"]
