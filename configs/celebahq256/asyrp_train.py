"""Train an Asyrp editor (DeltaBlock f_t, 512×8×8 h) on a real 256×256 DDPM with the official released-run
settings (asyrp_official.md; DL = diffusion_latent.py, MAIN = main.py, CL = losses/clip_loss.py of
kwonminki/Asyrp_official @ a6c82dc).

    python -m jaxhspace.main --config configs/celebahq256/asyrp_train.py --workdir runs/celebahq256_smiling \
        --config.model_path=/data/ddpm-ema-celebahq-256 --config.clip_path=/data/clip-vit-base-patch32 \
        --config.image_paths="('/data/celebahq_train100',)"

Required: ``model_path`` (diffusers UNet folder), ``clip_path`` (HF CLIPModel folder with its tokenizer files,
e.g. openai/clip-vit-base-patch32; the official --clip_model_name default is ViT-B/16, MAIN:212), and
``image_paths`` (training faces: files or a folder; the official scripts use 100 CelebA-HQ images). Re-running the
same command resumes from workdir/checkpoints; the editor is exported to workdir/editor when all epochs are done.
Then edit with configs/celebahq256/asyrp_edit.py.
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.task = "asyrp_train"
    c.precision = "highest"     # float32 matmuls on TPU/GPU; "high"/"default" faster, less accurate
    c.model_path = "/path/to/ddpm-ema-celebahq-256"   # REQUIRED: diffusers folder or official .ckpt/.pt
    c.model_format = "auto"      # auto | diffusers | ddpm_ckpt | guided_diffusion: a .ckpt/.pt converts into
                                 # workdir/converted (jaxhspace.checkpoints.auto_convert), reused while unchanged
    c.model_preset = ""          # the converter's --preset; "" = inferred from the file's parameter shapes
    c.model_arch_json = ""       # the converter's --arch-json, for checkpoints of other architectures
    c.clip_path = "/path/to/clip-vit-base-patch32"    # REQUIRED: HF CLIPModel folder with tokenizer files
    c.seed = 0
    # texts (utils/text_dic.py:25-26: 'face' -> 'smiling face')
    c.src_text = "face"
    c.tgt_text = "smiling face"
    c.target_factor = ""         # SynthFaces probe factor; not used for real faces
    c.templates = "imagenet"     # the 79 imagenet_templates, ΔT averaged over them (CL:90-117)
    # loss: script_train.sh / README λ_CLIP 1.0, λ_L1 3.0 (argparse defaults 3.0 / 0.0, MAIN:208, 210)
    c.lambda_clip = 1.0
    c.lambda_l1 = 3.0
    c.l1_use_cos = True          # L1 weighted by cos(src, tgt) of the raw texts (DL:340-351)
    c.clip_resize = "torch"      # torch bicubic to 224, no antialias, as the official preprocessing (CL:39-41)
    c.clip_batch = "official"    # bs > 1: -log(batch-mean L_dir), last x0 as source (CL:180, DL:343)
    # timesteps: script_train.sh:25-26 / README --user_defined_t_edit 500 --user_defined_t_addnoise 200;
    # -1 selects them from distance curves as set_t_edit_t_addnoise (DL:1308-1412)
    c.t_edit = 500
    c.t_boost = 200
    c.t_select_metric = "lpips"  # official: LPIPS(alex) (DL:1191-1303); needs lpips_path (only used if t_edit < 0)
    c.lpips_path = ""
    c.t_select_images = 100      # official n_train_img = 100 images for the LPIPS curves
    c.t_select_steps = 1000      # official: 1000-step inversion for the curves
    c.lpips_edit_th = 0.33       # MAIN:21
    c.lpips_addnoise_th = 1.2    # scripts / README --lpips_addnoise_th 1.2 --add_noise_from_xt
    c.add_noise_from_xt = True
    c.n_inv = 40                 # released checkpoints ..._ninv40_ngen40_0.pth (MAIN:235)
    c.n_train = 40               # ngen40 = n_train_step 40 (argparse default 6, MAIN:159-164)
    # optimiser: SGD, momentum 0, weight decay 0 (DL:201); lr 0.5 (script_train.sh / README); StepLR stepped per
    # epoch (DL:202, 406) with (20, 0.9) as stored in the released CelebA checkpoints
    c.optimizer = "sgd"
    c.lr = 0.5
    c.momentum = 0.0
    c.lr_step_size = 20
    c.lr_gamma = 0.9
    c.n_epochs = 1               # --n_iter default 1; the released checkpoints (suffix _0) are after epoch 1
    # data
    c.image_paths = ()           # REQUIRED: training faces (files or folders)
    c.data_seed = 0              # unused with image_paths
    c.n_train_img = 100          # SynthFaces only; with image_paths every given image is used (scripts: 100)
    c.batch_size = 1             # bs_train 1 in all official scripts
    c.shuffle = False            # official default (--shuffle_train_dataloader off)
    c.editor_num_groups = 32     # GroupNorm(32, 512, eps 1e-6) of the DDPM DeltaBlock (DM:228-263)
    # bookkeeping
    c.checkpoint_every = 50
    c.max_steps = 0
    return c
