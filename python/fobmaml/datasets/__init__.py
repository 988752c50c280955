"""Task families and task samplers."""

from .mnist1d import MNIST1DFewShot, mnist1d_fewshot
from .quadratic import quadratic_tasks
from .sinusoid import SinusoidSampler, sinusoid

__all__ = ["quadratic_tasks", "sinusoid", "SinusoidSampler", "mnist1d_fewshot", "MNIST1DFewShot"]
