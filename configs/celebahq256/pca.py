"""Haas et al. PCA of h per timestep (get_PCs_indv) over the model's own samples, on a real 256×256 DDPM, applied
to your own faces as Δh_t = scale·std_t·u_t at every step (haas_official.md §3, §5; editing/pca.py of
renhaa/semantic-diffusion @ 91f0a15).

    python -m jaxhspace.main --config configs/celebahq256/pca.py --workdir runs/celebahq256_pca \
        --config.model_path=/data/ddpm-ema-celebahq-256 --config.image_paths="('/data/celebahq_test',)"

Optional supervised direction (Haas' real-data variant, bu3dfe.py:53-113): mean h of the inverted
``supervised_pos_paths`` minus that of ``supervised_neg_paths`` (e.g. smiling vs neutral faces), over the
trajectory. Memory: the h's are [n_steps, num_pca_samples, 8, 8, 512] float32 (655 MB for 10 × 500).
Difference: the edits run on DDIM-inverted real faces with η = 0 (Haas edit generations with η = 1, fixed z's).
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.task = "pca"
    c.precision = "highest"     # float32 matmuls on TPU/GPU; "high"/"default" faster, less accurate
    c.model_path = "/path/to/ddpm-ema-celebahq-256"   # REQUIRED: diffusers folder or official .ckpt/.pt
    c.model_format = "auto"      # auto | diffusers | ddpm_ckpt | guided_diffusion: a .ckpt/.pt converts into
                                 # workdir/converted (jaxhspace.checkpoints.auto_convert), reused while unchanged
    c.model_preset = ""          # the converter's --preset; "" = inferred from the file's parameter shapes
    c.model_arch_json = ""       # the converter's --arch-json, for checkpoints of other architectures
    c.seed = 0
    c.data_seed = 12345        # unused with image_paths
    c.pca_source = "samples"   # the model's own generations (pca.sample(num_samples=500, etas=1), README:48)
    c.pca_eta = 1.0            # η = 1 (DDPM) samples
    c.pca_data_seed = 777      # x_T / noise seed of the PCA samples
    c.num_pca_samples = 500    # README:48
    c.pca_batch_size = 16      # generations per batch
    c.pca_image_paths = ()     # with pca_source="images": faces to invert instead
    c.num_images = 4
    c.image_paths = ()         # REQUIRED: faces to edit (files or folders)
    c.n_steps = 10             # 10 DDIM steps (README / demo)
    c.k = 25                   # 25 components kept (editing/pca.py:282-313)
    c.n_dirs = 3               # README:53-55 shows PCs 0, 1, 3
    c.supervised_factor = ""   # a name for the supervised direction (SynthFaces factor only for 32/64 px)
    c.supervised_pos_paths = ()
    c.supervised_neg_paths = ()
    c.scales = (-5.0, 5.0)     # ±5 std (README:53-55, linspace(-5, 5, 5))
    c.t_edit = 0               # every step
    c.t_boost = 0              # η = 0 on inverted real faces (see docstring)
    c.symmetric = True         # Haas' default symmetric update
    c.upscale = 1
    return c
