"""The job configs, installed as ``jaxhspace.configs``: run one by name from any directory,
``python -m jaxhspace.main --config demo --workdir runs/demo`` (``celebahq256/pullback`` for a subfolder's),
or by path, ``--config configs/demo.py``. ``jaxhspace.resources.config_names()`` lists them.
"""
