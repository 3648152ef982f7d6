"""Pick a top-k SVD method by name (shared by the pullback and Haas directions)."""
from __future__ import annotations

from jaxhspace.geometry.lanczos import lanczos_bidiag_svd
from jaxhspace.geometry.operators import JacobianOperator
from jaxhspace.geometry.svd import SVDResult, randomized_block_krylov, subspace_iteration

METHODS = ("lanczos", "krylov", "subspace")


def top_k_svd(op: JacobianOperator, k: int, key, method: str = "lanczos", **kwargs) -> SVDResult:
    """``lanczos_bidiag_svd`` (default: thick-restart Lanczos bidiagonalisation, one jitted call),
    ``randomized_block_krylov`` or ``subspace_iteration`` on ``op``; kwargs go to the method (``max_iters`` means
    block iterations for "krylov"/"subspace" and restart cycles for "lanczos")."""
    if method == "lanczos":
        return lanczos_bidiag_svd(op, k, key, **kwargs)
    if method == "krylov":
        return randomized_block_krylov(op, k, key, **kwargs)
    if method == "subspace":
        return subspace_iteration(op, k, key, **kwargs)
    raise ValueError(f"unknown SVD method {method!r}; choose one of {METHODS}")
