"""The main job: edit 8 SynthFaces test faces three ways and write a scored report (runs/demo/index.html).

    python -m jaxhspace.main --config configs/demo.py --workdir runs/demo
    python -m jaxhspace.main --config configs/demo.py:quick --workdir runs/demo_quick     # tiny settings, ~4 min
    python -m jaxhspace.main --config configs/demo.py --workdir runs/my_faces \
        --config.image_paths="('a.png','b.png')"

Stages (each is the stand-alone job of the same name; its sub-config is that job's own config, configs/<job>.py,
without the fields the demo sets once for every stage, with the overrides below):
  asyrp_edit  the shipped Asyrp editors at scales -1, 0.5, 1, 1.5, their global Δh, and their combination
  pullback    top right singular vectors of ∂h/∂x at the official edit time, x̂ = x + γ[ε(x+v) − ε(x)]
  haas        top singular vectors of ∂ε/∂h, added as Δh
  pca         PCA of h per timestep, plus the supervised mean-difference direction
  latent      the same faces in the text-conditioned latent pipeline assets/sd_synthfaces: pullback (J = dh/dz),
              Haas, PCA + supervised global Δh for smile / red hair / glasses (asymmetric), and prompt edits
"""
import ml_collections

try:
    from jaxhspace.configs import asyrp_edit, haas, pca, pullback
    from jaxhspace.configs.sd_synthfaces import prompt_edit
except ImportError:  # a source tree used without installing jaxhspace
    from configs import asyrp_edit, haas, pca, pullback
    from configs.sd_synthfaces import prompt_edit

EDITORS = ("assets/editors/red_hair", "assets/editors/glasses")
EDITOR_NAMES = ("red hair", "glasses")
# set once for every stage by the demo (tasks/demo_job.py copies them in), so not repeated in the stage sub-configs
SHARED = ("task", "precision", "model_path", "seed", "data_seed", "num_images", "image_paths", "upscale")


def stage(job_config, **overrides) -> ml_collections.ConfigDict:
    """A stage's sub-config: ``job_config`` without the :data:`SHARED` fields, with ``overrides``."""
    fields = {k: v for k, v in job_config.to_dict().items() if k not in SHARED}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise KeyError(f"demo stage overrides {unknown} are not fields of the {job_config.task} config")
    return ml_collections.ConfigDict({**fields, **overrides})


def get_config(arg: str = ""):
    """The demo's config; ``arg="quick"`` (``--config configs/demo.py:quick``) shrinks every stage to a few steps
    and 2 faces (the tests' demo)."""
    if arg not in ("", "full", "quick"):
        raise ValueError(f"configs/demo.py: unknown variant {arg!r}; use configs/demo.py or configs/demo.py:quick")
    c = ml_collections.ConfigDict()
    c.task = "demo"
    c.precision = "highest"     # float32 matmuls on TPU/GPU; "high"/"default" faster, less accurate
    c.model_path = ""                 # "" = assets/ddpm_synthfaces
    c.seed = 0
    c.data_seed = 12345               # SynthFaces test faces (training used other seeds)
    c.num_images = 8
    c.image_paths = ()                # or your own images (centre-cropped, resized to the model's size)
    c.upscale = 3
    c.stages = ("asyrp_edit", "pullback", "haas", "pca", "latent")

    c.asyrp_edit = stage(asyrp_edit.get_config(), editor_paths=EDITORS, editor_names=EDITOR_NAMES, global_dh_images=8)
    c.pullback = stage(pullback.get_config(), k=6, svd_max_iters=20)
    # one SVD per face at jacobian_t; the official per-step σ_k(t) (configs/haas.py) costs one SVD per edited step:
    # ≈3 min for this stage at 8 faces since the solver compiles once (0f9bd0b), ≈1.5 min with "constant"
    c.haas = stage(haas.get_config(), svd_max_iters=20, sigma_schedule="constant")
    c.pca = stage(pca.get_config(), supervised_factor="glasses", scales=(-2.0, 2.0))

    # the latent stage: each job's config is the pixel stage's with the latent model's overrides
    lat = ml_collections.ConfigDict()
    lat.model_path = "assets/sd_synthfaces"
    lat.prompt = ""                   # inversion and edits with the empty prompt (the unconditional branch)
    lat.jobs = ("pullback", "haas", "pca", "prompt_edit")
    lat.pullback = {**c.pullback.to_dict(), "n_steps": 20}
    lat.haas = c.haas.to_dict()
    lat.pca = {**c.pca.to_dict(), "n_dirs": 2, "supervised_factor": ("smile", "hair_color=red", "glasses"),
               "scales": (-1.0, 0.5, 1.0, 1.5), "symmetric": False}
    lat.prompt_edit = stage(prompt_edit.get_config())
    c.latent = lat
    if arg == "quick":
        quick(c)
    return c


def quick(c) -> None:
    """Shrink ``c`` in place to the tiny demo: 2 faces, a few steps, k = 2, one direction per method."""
    c.num_images = 2
    c.upscale = 1
    c.asyrp_edit.update(n_inv=8, n_test=8, scales=(-1.0, 1.0), global_dh_images=2)
    c.pullback.update(n_steps=8, k=2, n_dirs=1, svd_max_iters=3, n_edit_steps=2)
    c.haas.update(n_steps=6, k=2, n_dirs=1, svd_max_iters=3)
    c.pca.update(n_steps=6, num_pca_samples=16, k=2, n_dirs=1, scales=(2.0,))
    lat = c.latent
    lat.pullback.update(n_steps=4, k=2, n_dirs=1, svd_max_iters=3, n_edit_steps=2)
    lat.haas.update(n_steps=3, k=2, n_dirs=1, svd_max_iters=3)
    lat.pca.update(n_steps=4, num_pca_samples=16, k=2, n_dirs=1, scales=(-1.0, 1.0))
    lat.prompt_edit.update(n_steps=3)
