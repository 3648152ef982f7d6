"""Write notebooks/quickstart.ipynb and notebooks/tpu.ipynb from the cell sources below (review the notebooks here).

Run: ``python notebooks/build_notebooks.py`` (needs ``nbformat``). Outputs are not stored; tests/test_notebooks.py
executes both notebooks top to bottom with ``JAXHSPACE_NOTEBOOK_TINY=1`` (tiny settings, CPU).
"""
from __future__ import annotations

import os
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))

# ------------------------------------------------------------------------------------------------
# Shared cells
# ------------------------------------------------------------------------------------------------
def setup_cell(pip_spec: str, before_jax: str = "") -> str:
    """First code cell: install jaxhspace (a regular install, by name or wheel path) unless it is importable, then
    print its version and JAX's backend. ``before_jax``: code that must run before jax is imported."""
    return r'''
import os
import subprocess
import sys

# A regular install: the wheel carries the shipped models and configs, no checkout is needed. JAXHSPACE_PIP is what
# pip installs: a name (PEP 508, e.g. "jaxhspace[tpu]") or the path of a wheel you uploaded, e.g.
# "/content/jaxhspace-0.1.0-py3-none-any.whl[tpu]" (build it in a checkout with `python -m build`).
JAXHSPACE_PIP = os.environ.get("JAXHSPACE_PIP", "''' + pip_spec + r'''")
try:
    import jaxhspace
except ImportError:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", JAXHSPACE_PIP], check=True)
    import jaxhspace

# TINY = True runs everything with tiny settings (CI runs the notebooks on CPU this way).
TINY = os.environ.get("JAXHSPACE_NOTEBOOK_TINY", "0") == "1"
''' + before_jax + r'''
import jax

# Matmul precision: "highest" = float32 matmuls / convolutions on TPU and GPU too (their default is bf16 passes on
# TPU, TF32 on GPU); "high" or "default" run faster with ~1e-4 / ~1e-3 relative error (jaxhspace.precision).
PRECISION = os.environ.get("JAXHSPACE_PRECISION", "highest")
jax.config.update("jax_default_matmul_precision", PRECISION)

print(f"jaxhspace {jaxhspace.__version__} | JAX {jax.__version__} | backend: {jax.default_backend()} | "
      f"precision {PRECISION} | {'tiny' if TINY else 'full'} settings")
'''


PLOT_HELPER = r'''
import matplotlib.pyplot as plt
from jaxhspace.data.images import make_grid


def show(images, title="", upscale=3):
    """images: [N, H, W, 3] or [R, C, H, W, 3] in [-1, 1]."""
    plt.figure(figsize=(8, 3))
    plt.imshow(make_grid(np.asarray(images), upscale=upscale))
    plt.title(title)
    plt.axis("off")
    plt.show()
'''

# ------------------------------------------------------------------------------------------------
# quickstart.ipynb
# ------------------------------------------------------------------------------------------------
QUICKSTART = [
    ("md", """
# jaxhspace quickstart

The h-space (the UNet bottleneck, the mid-block output) of a diffusion model, in JAX/Flax:

1. load the shipped model (`jaxhspace.world.load_model()`: the SynthFaces DDPM that the package carries, or a
   random tiny UNet with a warning saying how to get it back if that asset is missing);
2. DDIM sampling and DDIM inversion;
3. an Asyrp edit (asymmetric reverse process with a Δh in h-space): a shipped editor from `assets/editors` if
   there is one, otherwise a supervised Δh (mean h of smiling minus frowning SynthFaces);
4. pullback directions (Park et al.): the top singular vectors of J = ∂h/∂x, by randomized block Krylov.

Runtime → Change runtime type → TPU (or GPU/CPU: everything also runs there). The first cell installs jaxhspace
(by name, or set `JAXHSPACE_PIP` to an uploaded wheel's path) unless it is already installed."""),
    ("code", setup_cell("jaxhspace")),
    ("code", r'''
if TINY:
    N_IMAGES, N_STEPS, N_INV, N_TEST, N_DIR_IMAGES, K_DIRS = 2, 4, 4, 4, 16, 2
else:
    N_IMAGES, N_STEPS, N_INV, N_TEST, N_DIR_IMAGES, K_DIRS = 8, 50, 40, 40, 256, 8
T_EDIT, T_BOOST = 500, 200
'''),
    ("code", r'''
import jax
import jax.numpy as jnp
import numpy as np

from jaxhspace.world import load_model

print("devices:", jax.devices())
model, params, schedule, source = load_model()
size = model.config.sample_size
size = size if isinstance(size, int) else size[0]
print("model:", source, "| image size", size, "| h-space", model.hspace_shape(size, size))
''' + PLOT_HELPER),
    ("md", "## Sample and invert\n`ddim_sample` / `ddim_invert` are one `lax.scan` each; `eps_fn` closes over the "
           "params."),
    ("code", r'''
from jaxhspace.diffusion.ddim import ddim_invert, ddim_sample
from jaxhspace.diffusion.schedule import asyrp_timesteps, ddim_timesteps
from jaxhspace.models.functional import eps_fn

eps = eps_fn(model, params)
x_T = jax.random.normal(jax.random.PRNGKey(0), (N_IMAGES, size, size, 3))
samples = ddim_sample(eps, x_T, ddim_timesteps(N_STEPS), schedule)
show(samples, f"{N_STEPS}-step DDIM samples")
'''),
    ("code", r'''
from jaxhspace.data import synthfaces

x0, factors = synthfaces.generate(seed=1, n=N_IMAGES, size=size)
grid = asyrp_timesteps(N_INV)                       # ascending 0 ... 999 (Asyrp convention)
x_lat = ddim_invert(eps, jnp.asarray(x0), grid, schedule)
recon = ddim_sample(eps, x_lat, grid[::-1], schedule)
print("reconstruction MSE:", float(jnp.mean((recon - x0) ** 2)))
show(np.stack([x0, np.asarray(recon)]), "real (top) / DDIM inversion + reconstruction (bottom)")
'''),
    ("md", """## Asyrp edit
A shipped editor (`assets/editors/<name>`, written by `save_editor`) is used when present; otherwise a supervised
Δh: the mean h of smiling minus frowning SynthFaces at t = 600 (Haas et al.'s supervised direction), applied at
every t ≥ t_edit. `asyrp_edit` inverts the images and runs images × scales in one jitted `vmap`."""),
    ("code", r'''
from jaxhspace.editing.asyrp_edit import ConstantDelta, EditorDelta, asyrp_edit
from jaxhspace.world import ASSETS

editor_dir = os.path.join(ASSETS, "editors")
editors = sorted(d for d in os.listdir(editor_dir)) if os.path.isdir(editor_dir) else []
if editors:
    from jaxhspace.editing.editor_io import load_editor

    editor, eparams, meta = load_editor(os.path.join(editor_dir, editors[0]))
    delta, n_train_step, scales = EditorDelta(eparams, editor), meta.get("n_train_step"), [0.5, 1.0]
    what = f"shipped editor {editors[0]}"
else:
    from jaxhspace.directions.pca import collect_h, mean_difference

    imgs, f = synthfaces.generate(seed=2, n=N_DIR_IMAGES, size=size)
    t_dir = 600
    a = float(schedule.alphas_cumprod[t_dir])
    noise = np.asarray(jax.random.normal(jax.random.PRNGKey(3), imgs.shape))
    h = collect_h(model, params, np.sqrt(a) * imgs + np.sqrt(1 - a) * noise, t_dir)
    pos, neg = f["smile"] > 0, f["smile"] <= 0
    dh = mean_difference(h[pos], h[neg])
    delta, n_train_step, scales = ConstantDelta(jnp.asarray(dh)), None, [-1.0, 1.0]
    what = "supervised Δh (smile: mean h of smiling − frowning faces)"
edits = asyrp_edit(model, params, schedule, jnp.asarray(x0), delta, scales, n_inv=N_INV, n_test=N_TEST,
                   t_edit=T_EDIT, t_boost=T_BOOST, n_train_step=n_train_step)
print(what, "| edits", edits.shape)                 # [K scales, B images, H, W, 3]
show(np.concatenate([np.asarray(x0)[None], np.asarray(edits)]), f"real / scales {scales}")
'''),
    ("md", """## Pullback directions
Top-k right singular vectors v_i (in image space at time t) and left u_i = J v_i / σ_i (in h-space) of
J = ∂h/∂x at one noisy image, by randomized block Krylov on JᵀJ: one `jax.linearize` and a few block products.
Then an edit along v_1 (x ← x + γ[ε(x + v) − ε(x)]) and DDIM sampling from t to 0."""),
    ("code", r'''
from jaxhspace.directions import pullback

t_pb = 600
a = float(schedule.alphas_cumprod[t_pb])
x_t = jnp.sqrt(a) * x0[0] + jnp.sqrt(1 - a) * jax.random.normal(jax.random.PRNGKey(4), x0[0].shape)
res = pullback(model, params, x_t, t_pb, k=K_DIRS, key=0, **(dict(block_size=4, max_iters=3) if TINY else {}))
print("singular values:", np.round(np.asarray(res.s), 3))
print(f"Jacobian products: {res.n_jvp} JVPs + {res.n_vjp} VJPs, iterations {res.iterations}, "
      f"max relative residual {res.max_relative_residual:.1e}")
v = np.asarray(res.v)
show(v / np.abs(v).max(axis=(1, 2, 3), keepdims=True), "top right singular vectors v_i (image space)")
'''),
    ("code", r'''
from jaxhspace.editing.pullback_edit import continue_sampling, edit_steps

ts_rest = np.asarray([t for t in ddim_timesteps(N_STEPS) if t <= t_pb])
ts_rest = ts_rest if ts_rest.size and ts_rest[0] == t_pb else np.concatenate([[t_pb], ts_rest])
GAMMA = 0.5   # official: 0.1 with N = 16 steps at 256 px; raise it if the edit is too faint


@jax.jit   # one compile for all γ (γ is traced); γ = 0 leaves x_t unchanged: the unedited reference
def edit_then_sample(gamma):
    xe = edit_steps(eps, x_t[None], t_pb, res.v[0], gamma=gamma, n_steps=4 if TINY else 16)
    return continue_sampling(eps, xe, ts_rest, schedule)[0]


outs = [edit_then_sample(g) for g in (-GAMMA, 0.0, GAMMA)]
show(np.stack(outs), "edit along v_1: γ < 0 / none / γ > 0")
'''),
]

# ------------------------------------------------------------------------------------------------
# tpu.ipynb
# ------------------------------------------------------------------------------------------------
TPU = [
    ("md", """
# jaxhspace on TPU: sharded batch edits and Jacobian-SVD timing

Runtime → Change runtime type → TPU. The first cell installs `jaxhspace[tpu]` (JAX's TPU build; or set
`JAXHSPACE_PIP` to an uploaded wheel's path, e.g. `/content/jaxhspace-0.1.0-py3-none-any.whl[tpu]`) unless it is
already installed. The batch of images (and the block of probe vectors of the Jacobian SVD)
is split over all devices of a 1-D mesh; weights are replicated (`jaxhspace/parallel.py`). With tiny settings
(CI) the notebook fakes 4 CPU devices."""),
    ("code", setup_cell("jaxhspace[tpu]", before_jax=r'''
if TINY and "XLA_FLAGS" not in os.environ:
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"   # before jax is imported
''')),
    ("code", r'''
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxhspace import parallel
from jaxhspace.world import load_model

print("backend:", jax.default_backend(), "| devices:", jax.device_count(), jax.devices())
mesh = parallel.make_mesh()
n_dev = jax.device_count()
model, params, schedule, source = load_model()
size = model.config.sample_size
size = size if isinstance(size, int) else size[0]
params_rep = parallel.replicate(params, mesh)       # one copy per device, once (params: default device)
print("model:", source, "| mesh:", dict(mesh.shape))

if TINY:
    PER_DEVICE, N_INV, N_TEST, K, BLOCK = 1, 4, 4, 2, 4
else:
    PER_DEVICE, N_INV, N_TEST, K, BLOCK = 8, 40, 40, 16, 8 * n_dev


def timed(f, *a, **kw):
    """(result, seconds of the first call incl. compile, seconds of a second call)."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(f(*a, **kw))
    t1 = time.perf_counter()
    out = jax.block_until_ready(f(*a, **kw))
    t2 = time.perf_counter()
    return out, t1 - t0, t2 - t1
'''),
    ("md", "## Sharded batch edit\nB = PER_DEVICE × n_devices images, edited at two scales in one SPMD program."),
    ("code", r'''
from jaxhspace.data import synthfaces
from jaxhspace.editing.asyrp_edit import ConstantDelta, asyrp_edit

B = PER_DEVICE * n_dev
x0, _ = synthfaces.generate(seed=0, n=B, size=size)
dh = 0.5 * jax.random.normal(jax.random.PRNGKey(1), model.hspace_shape(size, size))   # any Δh [h, w, C]
kw = dict(n_inv=N_INV, n_test=N_TEST, t_edit=500, t_boost=200)
edits, t_first, t_run = timed(parallel.sharded_asyrp_edit, model, params_rep, schedule, mesh, x0, ConstantDelta(dh),
                              [-1.0, 1.0], **kw)
print(f"{B} images x 2 scales on {n_dev} devices: first call {t_first:.1f}s (compile), then {t_run:.2f}s")
print("output", edits.shape, "sharded over", len(edits.sharding.device_set), "devices")
if TINY:   # same numbers as one device
    ref = asyrp_edit(model, params, schedule, jnp.asarray(x0), ConstantDelta(dh), [-1.0, 1.0], **kw)
    print("max |sharded - single device| =", float(jnp.max(jnp.abs(jax.device_get(edits) - ref))))
'''),
    ("md", """## Jacobian-SVD timing
Top-k pullback directions (J = ∂h/∂x) with randomized block Krylov, once with the probe block on one device and
once split over all devices (`ShardedJacobianOperator`); a block size divisible by the device count avoids
padding."""),
    ("code", r'''
from jaxhspace.geometry.operators import JacobianOperator
from jaxhspace.geometry.svd import randomized_block_krylov
from jaxhspace.models.functional import h_of_x

t = 500
a = float(schedule.alphas_cumprod[t])
x_t = jnp.sqrt(a) * x0[0] + jnp.sqrt(1 - a) * jax.random.normal(jax.random.PRNGKey(2), x0[0].shape)
svd_kw = dict(block_size=BLOCK, max_iters=4 if TINY else 20, tol=1e-4)
# jax.jit(f): jax.linearize then traces the encoder once instead of running it op by op
for name, op in [("1 device", JacobianOperator(jax.jit(h_of_x(model, params, t)), x_t)),
                 (f"{n_dev} devices", parallel.ShardedJacobianOperator(jax.jit(h_of_x(model, params_rep, t)), x_t,
                                                                       mesh))]:
    randomized_block_krylov(op, K, 0, **dict(svd_kw, max_iters=1))           # warm-up: compile the products
    t0 = time.perf_counter()
    res = randomized_block_krylov(op, K, 0, **svd_kw)
    dt = time.perf_counter() - t0
    print(f"{name}: {dt:.2f}s, {res.n_products} products, {res.iterations} iterations, "
          f"sigma[:4] = {np.round(np.asarray(res.s[:4]), 4)}, max rel residual {res.max_relative_residual:.1e}")
'''),
    ("md", "## bf16 compute\nSame float32 params, bfloat16 arithmetic (`jaxhspace.precision.with_compute_dtype`); "
           "on TPU this is the MXU-native mode. The error vs float32 is of order 1e-2 relative."),
    ("code", r'''
from jaxhspace.models.functional import eps_fn
from jaxhspace.precision import relative_max_error, with_compute_dtype

m16 = with_compute_dtype(model, jnp.bfloat16)
x = parallel.shard_batch(jnp.asarray(x0), mesh)
tt = jnp.full((B,), 500)
e32 = jax.jit(eps_fn(model, params_rep))(x, tt)
e16 = jax.jit(eps_fn(m16, params_rep))(x, tt)
print(f"bf16 vs float32 eps: max|diff| / max|eps| = {relative_max_error(e16, e32):.2e}")
'''),
]


def build(cells) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.cells = [new_markdown_cell(src.strip()) if kind == "md" else new_code_cell(src.strip()) for kind, src in cells]
    for i, cell in enumerate(nb.cells):  # deterministic ids: rebuilding gives byte-identical files
        cell["id"] = f"cell-{i:02d}"
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}, "accelerator": "TPU",
                   "colab": {"provenance": []}}
    return nb


def main(out_dir: str = HERE) -> list[str]:
    paths = []
    for name, cells in (("quickstart.ipynb", QUICKSTART), ("tpu.ipynb", TPU)):
        nb = build(cells)
        nbformat.validate(nb)
        path = os.path.join(out_dir, name)
        nbformat.write(nb, path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    print("\n".join(main(sys.argv[1] if len(sys.argv) > 1 else HERE)))
