"""Train an Asyrp editor (DeltaBlock f_t) with the CLIP directional loss, as the official run_training.

    python -m jaxhspace.main --config configs/asyrp_train.py --workdir runs/asyrp_smiling
    python -m jaxhspace.main --config configs/asyrp_train.py --workdir runs/asyrp_smiling \
        --config.src_text="face" --config.tgt_text="smiling face" --config.lr=0.5

Re-running the same command resumes bit-exactly from the newest checkpoint in workdir/checkpoints. When all
epochs are done the editor is exported to workdir/editor (load with jaxhspace.editing.editor_io.load_editor).
Values follow the released runs (kwonminki/Asyrp_official@a6c82dc:script_train.sh:10-38, …:README.md:96-101 and the
released checkpoints, e.g. …:checkpoint/smiling_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth) unless noted.
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.task = "asyrp_train"
    c.precision = "highest"     # float32 matmuls on TPU/GPU; "high"/"default" faster, less accurate
    c.model_path = ""            # diffusers UNet folder; "" = assets/ddpm_synthfaces (world.load_model)
    c.clip_path = ""             # HF CLIPModel folder with tokenizer files; "" = assets/clip_synthfaces
    c.seed = 0                   # editor init (PyTorch-default init) and shuffling
    # texts
    c.src_text = "face"
    c.tgt_text = "smiling face"
    c.target_factor = ""         # optional: the SynthFaces factor the edit should move (stored in the editor's meta
                                 # so asyrp_edit / demo can score target change and leakage)
    c.templates = "imagenet"     # "imagenet" (the 79 StyleGAN-NADA templates, official) | "none" (raw strings)
    # loss (script_train.sh / README: clip 1.0, l1 3.0; argparse defaults: 3.0 / 0.0)
    c.lambda_clip = 1.0
    c.lambda_l1 = 3.0
    c.l1_use_cos = True          # official: the L1 term is weighted by cos(src, tgt); False = plain λ_L1
    c.clip_resize = "torch"      # "torch" (exact torch bicubic, official) | "jax" (jax.image.resize)
    c.clip_batch = "per_example"  # batch > 1: mean of per-image -log losses; "official": -log(batch-mean L_dir)
    # timesteps (README: t_edit 500, t_boost 200; -1 = select from distance curves, see jaxhspace.editing.t_select)
    c.t_edit = 500
    c.t_boost = 200
    c.t_select_metric = "msl2"   # "msl2" | "probe" | "lpips" (needs lpips_path); thresholds are LPIPS-calibrated
                                 # only for lpips
    c.lpips_path = ""
    c.t_select_images = 8
    c.t_select_steps = 100
    c.lpips_edit_th = 0.33
    c.lpips_addnoise_th = 1.2
    c.add_noise_from_xt = True
    c.n_inv = 40                 # released checkpoints: ninv40
    c.n_train = 40               # released checkpoints: ngen40 (argparse default 6)
    # optimiser: SGD momentum 0, lr 0.5, StepLR per epoch (released CelebA checkpoints: step 20, gamma 0.9)
    c.optimizer = "sgd"          # "sgd" | "adam"
    c.lr = 0.5
    c.momentum = 0.0
    c.lr_step_size = 20
    c.lr_gamma = 0.9
    c.n_epochs = 1               # official --n_iter (default 1; scripts 5)
    # data: SynthFaces (data_seed) unless image_paths is set
    c.image_paths = ()
    c.data_seed = 0
    c.n_train_img = 100          # scripts: 100 (argparse default 50)
    c.batch_size = 1             # as in all official scripts
    c.shuffle = False            # official default: no shuffle
    c.editor_num_groups = 32     # GroupNorm groups of the DeltaBlock (official 32; must divide the h channels)
    # bookkeeping
    c.checkpoint_every = 50      # optimiser steps
    c.max_steps = 0              # >0: stop (after saving) once this many steps are done; rerun to resume
    return c
