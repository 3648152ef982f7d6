"""Asyrp edits of your own faces with trained editors on a real 256×256 DDPM (official test-time settings,
asyrp_official.md §1, §5; DL = diffusion_latent.py of kwonminki/Asyrp_official @ a6c82dc).

    python -m jaxhspace.main --config configs/celebahq256/asyrp_edit.py --workdir runs/celebahq256_edit \
        --config.model_path=/data/ddpm-ema-celebahq-256 --config.image_paths="('/data/celebahq_test',)" \
        --config.editor_paths="('runs/celebahq256_smiling/editor',)"

``editor_paths``: editors from configs/celebahq256/asyrp_train.py or official checkpoints converted with
``python -m checkpoints_convert.asyrp_editor SRC.pth DST`` (e.g. the released CelebA smiling_..._ninv40_ngen40_0.pth;
n_train_step 40 is then read from the editor's meta). Outputs as configs/asyrp_edit.py (no probe scores at 256 px).

Base model of the official editors: they were trained on SDEdit's ``celeba_hq.ckpt`` (the pesser/pytorch_diffusion
DDPM that Asyrp_official loads), NOT on diffusers' ``google/ddpm-ema-celebahq-256``. That the two hold the same
weights is unverified (it is not stated anywhere, and not checked here), so an official editor on
google/ddpm-ema-celebahq-256 may edit differently from the paper. For the original base convert it with
``python -m checkpoints_convert.ddpm_ckpt celeba_hq.ckpt /data/celeba_hq_ddpm --preset celeba_hq`` (or point
model_path at the .ckpt: it converts into the workdir) and use that folder as model_path.
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.task = "asyrp_edit"
    c.precision = "highest"     # float32 matmuls on TPU/GPU; "high"/"default" faster, less accurate
    c.model_path = "/path/to/ddpm-ema-celebahq-256"   # REQUIRED: diffusers folder or official .ckpt/.pt
    c.model_format = "auto"      # auto | diffusers | ddpm_ckpt | guided_diffusion: a .ckpt/.pt converts into
                                 # workdir/converted (jaxhspace.checkpoints.auto_convert), reused while unchanged
    c.model_preset = ""          # the converter's --preset; "" = inferred from the file's parameter shapes
    c.model_arch_json = ""       # the converter's --arch-json, for checkpoints of other architectures
    c.editor_paths = ()             # REQUIRED (or delta_h_paths): trained / converted editors
    c.target_factors = ()           # SynthFaces probe factors; not used at 256 px
    c.delta_h_paths = ()            # .npz Δh files (e.g. from the haas / pca jobs)
    c.scales = (-1.0, 0.5, 1.0, 1.5)  # s in n_train/n_test·s (DL:626); negative = the opposite edit (README:220)
    c.combine_coeffs = ()           # c_i of Σ c_i/√N·Δh_i (--multiple_hs_coeff, default 1; DL:630-655)
    c.n_inv = 40                    # released ninv40
    c.n_test = 40                   # MAIN:159-164 n_test_step 40
    c.t_edit = -1                   # -1: the editor's meta (trained with 500: script_train.sh:25-26), else 500
    c.t_boost = -1                  # -1: the editor's meta (200), η = 1 below it (DL:513)
    c.n_train_step = -1             # -1: the editor's meta (40 for ngen40 checkpoints); scaling n_train/n_test (DL:626)
    c.global_dh_images = 4          # --num_mean_of_delta_hs K: global Δh over K images (DL:612-623, 811-835)
    c.global_dh_set = "separate"    # official: the first K TRAINING images (DL:779-829); "edited" = in-sample
    c.global_dh_seed = 0            # unused with image_paths
    c.global_dh_paths = ()          # REQUIRED with global_dh_images > 0: training faces (e.g. CelebA-HQ train)
    c.num_images = 4
    c.data_seed = 12345             # unused with image_paths
    c.image_paths = ()              # REQUIRED: faces to edit (files or folders)
    c.seed = 0                      # boosting noise
    c.upscale = 1
    return c
