"""The main job: edit 8 SynthFaces test faces three ways and write a scored report (runs/demo/index.html).

    python -m jaxhspace.main --config configs/demo.py --workdir runs/demo
    python -m jaxhspace.main --config configs/demo.py --workdir runs/my_faces \
        --config.image_paths="('a.png','b.png')"

Stages (each is the stand-alone job of the same name, with the sub-config below):
  asyrp_edit  the shipped Asyrp editors at scales -1, 0.5, 1, 1.5, their global Δh, and their combination
  pullback    top right singular vectors of ∂h/∂x at the official edit time, x̂ = x + γ[ε(x+v) − ε(x)]
  haas        top singular vectors of ∂ε/∂h, added as Δh
  pca         PCA of h per timestep, plus the supervised mean-difference direction
  latent      the same faces in the text-conditioned latent pipeline assets/sd_synthfaces: pullback (J = dh/dz),
              Haas, PCA + supervised global Δh for smile / red hair / glasses (asymmetric), and prompt edits
"""
import ml_collections

EDITORS = ("assets/editors/red_hair", "assets/editors/glasses")
EDITOR_NAMES = ("red hair", "glasses")


def get_config():
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
    c.editor_names = EDITOR_NAMES

    a = ml_collections.ConfigDict()
    a.editor_paths = EDITORS
    a.target_factors = ()             # () = each editor's own meta["target_factor"] (hair_color=red, glasses)
    a.delta_h_paths = ()
    a.scales = (-1.0, 0.5, 1.0, 1.5)
    a.combine_coeffs = ()
    a.n_inv = 40
    a.n_test = 40
    a.t_edit = -1                     # from the editors' meta (their training t_edit)
    a.t_boost = -1
    a.n_train_step = -1
    a.global_dh_images = 8
    c.asyrp_edit = a

    p = ml_collections.ConfigDict()
    p.n_steps = 50
    p.edit_t = 600                    # official Diffusion-Pullback edit_t = 0.6 T for CelebA-HQ
    p.t_boost = 200
    p.k = 6
    p.svd_method = "krylov"
    p.svd_tol = 1e-3
    p.svd_max_iters = 20
    p.n_dirs = 3
    p.gamma = 0.5
    p.lam = 10.0
    p.n_edit_steps = 16
    c.pullback = p

    h = ml_collections.ConfigDict()
    h.n_steps = 20
    h.jacobian_t = 600
    h.t_edit = 0
    h.t_boost = 0
    h.symmetric = True
    h.k = 3
    h.svd_tol = 1e-3
    h.svd_max_iters = 20
    h.n_dirs = 3
    h.scales = (-100.0, 100.0)        # Δh = scale·σ·v; σ(∂ε/∂h) ≈ 0.1 here, so |Δh| ≈ 10 (h's PC std: 15-46)
    # one SVD per face at jacobian_t (the official per-step σ_k(t) costs one SVD per edited step, each ≈10 s here
    # because every call re-linearises and re-compiles: 20x the demo's Haas time); configs/haas.py keeps "per_step"
    h.sigma_schedule = "constant"
    c.haas = h

    q = ml_collections.ConfigDict()
    q.pca_data_seed = 777
    q.num_pca_samples = 128
    q.n_steps = 20
    q.k = 8
    q.n_dirs = 3
    q.supervised_factor = "glasses"
    q.scales = (-2.0, 2.0)
    q.t_edit = 0
    q.t_boost = 0
    q.symmetric = True
    c.pca = q

    # the latent stage: each job's config is the pixel stage's with the latent model's overrides
    lat = ml_collections.ConfigDict()
    lat.model_path = "assets/sd_synthfaces"
    lat.prompt = ""                   # inversion and edits with the empty prompt (the unconditional branch)
    lat.jobs = ("pullback", "haas", "pca", "prompt_edit")
    lat.pullback = {**p.to_dict(), "n_steps": 20}
    lat.haas = h.to_dict()
    lat.pca = {**q.to_dict(), "n_dirs": 2, "supervised_factor": ("smile", "hair_color=red", "glasses"),
               "scales": (-1.0, 0.5, 1.0, 1.5), "symmetric": False}
    from jaxhspace.configs.sd_synthfaces.prompt_edit import get_config as prompt_edit_config

    pe = prompt_edit_config()
    lat.prompt_edit = {k: pe[k] for k in ("n_steps", "source_prompt", "edits", "guidance_scale")}
    c.latent = lat
    return c
