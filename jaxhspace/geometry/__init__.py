"""Matrix-free Jacobian geometry: linear operators from ``jax.linearize``/``jax.linear_transpose``,
top-k SVD by thick-restart Lanczos bidiagonalisation (default), randomized block Krylov or subspace iteration,
and HOSVD/Tucker of tensor-shaped Jacobians.
Knows nothing of UNets: everything takes plain functions."""
from jaxhspace.geometry.hosvd import TuckerResult, jacobian_hosvd  # noqa: F401
from jaxhspace.geometry.lanczos import (  # noqa: F401
    LanczosSVD, lanczos_bidiag_svd, lanczos_svd_batch_of, lanczos_svd_of)
from jaxhspace.geometry.operators import JacobianOperator  # noqa: F401
from jaxhspace.geometry.svd import (  # noqa: F401
    SVDResult, align_signs, dense_svd_reference, principal_angles, randomized_block_krylov, subspace_iteration,
    two_sided_residuals)
