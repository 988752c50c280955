"""The version of fobmaml: the one place it is written.

The build reads it from here (``[tool.scikit-build.metadata.version]`` in
pyproject.toml) into the distribution's metadata, so ``fobmaml.__version__`` and
``importlib.metadata.version("fobmaml")`` agree.
"""

__version__ = "0.1.0"
