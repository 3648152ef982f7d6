"""The package's own data: the embedded default world (``jaxhspace.assets``) and the job configs
(``jaxhspace.configs``), found with :mod:`importlib.resources`.

In the repository they are the top-level folders ``assets/`` and ``configs/``; the wheel and sdist carry them as
those two subpackages (setup.py maps them), and an editable install (``pip install -e .``) maps the same names
onto the checkout's folders, so both resolve to the same files. Only a source tree used without any install
(its root merely on ``sys.path``) falls back to its top-level folders.
"""
from __future__ import annotations

import importlib.resources
import os
from typing import Any

_SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _package_folder(package: str, source_folder: str) -> str:
    try:
        return str(importlib.resources.files(package))
    except ModuleNotFoundError:  # a source tree on sys.path, never installed
        return os.path.join(_SOURCE_ROOT, source_folder)


def assets_dir() -> str:
    """Folder of the shipped assets (``ddpm_synthfaces``, ``ddpm_synthfaces_refined``, ``clip_synthfaces``,
    ``probe``, ``editors/``): the installed ``jaxhspace.assets`` package, i.e. the checkout's ``assets/``
    under an editable install."""
    return _package_folder("jaxhspace.assets", "assets")


def configs_dir() -> str:
    """Folder of the shipped job configs: the installed ``jaxhspace.configs`` package (``configs/``)."""
    return _package_folder("jaxhspace.configs", "configs")


def config_names() -> list[str]:
    """Names of the shipped job configs, sorted: their paths under ``configs/`` without ``.py``, e.g.
    ``demo``, ``celebahq256/pullback``."""
    root = configs_dir()
    names = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if not d.startswith(("_", "."))]  # __pycache__
        rel = os.path.relpath(folder, root)
        for f in files:
            if f.endswith(".py") and not f.startswith("_"):
                name = f[:-3] if rel == "." else os.path.join(rel, f[:-3])
                names.append(name.replace(os.sep, "/"))
    return sorted(names)


def resolve_config(arg: str) -> str:
    """A ``--config`` value as a config file path (ml_collections' ``PATH[:ARGS]`` form is kept).

    An existing file is used as it is. Otherwise ``arg`` names a shipped config: ``demo`` or
    ``celebahq256/pullback`` (``.py`` and a leading ``configs/`` are accepted too, so a README command such as
    ``--config configs/demo.py`` also works outside a checkout), and the packaged file is returned.

    Raises:
      ValueError listing the shipped config names if ``arg`` is neither an existing file nor one of them.
    """
    path, sep, args = arg.partition(":")
    if os.path.isfile(path):
        return arg
    name = path.replace(os.sep, "/").strip()
    name = name[len("configs/"):] if name.startswith("configs/") else name
    name = name[:-3] if name.endswith(".py") else name
    names = config_names()
    if name in names:
        return os.path.join(configs_dir(), *name.split("/")) + ".py" + sep + args
    raise ValueError(
        f"--config {arg!r} is neither a config file nor a shipped config. Shipped configs (run one with "
        f"--config NAME): {', '.join(names)}. Or pass the path to your own config file (a .py with get_config()).")


def define_config_flag(name: str = "config", help_string: str | None = None, flag_values=None, sys_argv=None):
    """ml_collections' ``DEFINE_config_file`` flag (locked config, ``--NAME.field=value`` overrides) whose value
    may also be a shipped config's name (:func:`resolve_config`). Returns the flag holder."""
    from absl import flags
    from ml_collections import config_flags

    flag_values = flags.FLAGS if flag_values is None else flag_values
    help_string = help_string or ("A shipped job's name (demo, pca, celebahq256/pullback, ...; an unknown name "
                                  "lists them) or the path to a config file.")
    holder = config_flags.DEFINE_config_file(name, None, help_string, flag_values=flag_values, lock_config=True,
                                             sys_argv=sys_argv)

    parser_cls: Any = type(flag_values[name].parser)  # ml_collections' ConfigFileFlagParser

    class ConfigNameParser(parser_cls):
        def parse(self, path):
            return super().parse(resolve_config(path))

    flag_values[name].parser = ConfigNameParser(name=name, lock_config=True)
    return holder
