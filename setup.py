"""Package layout only; the metadata (name, version, dependencies, extras) is in pyproject.toml.

The repository keeps the embedded default world in the top-level ``assets/`` and the job configs in
``configs/``; the wheel and sdist carry them as the subpackages ``jaxhspace.assets`` and ``jaxhspace.configs``
(``package_dir`` maps them), found at run time with ``importlib.resources`` (jaxhspace/resources.py). An
editable install (``pip install -e .``) maps the same names onto the checkout's folders.
"""
from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["jaxhspace", "jaxhspace.*", "checkpoints_convert", "checkpoints_convert.*"]),
              "jaxhspace.assets", "jaxhspace.configs",
              *(f"jaxhspace.configs.{p}" for p in find_packages("configs"))],
    package_dir={"jaxhspace.assets": "assets", "jaxhspace.configs": "configs"},
)
