"""Benchmark: throughput of jaxhspace (JAX) vs PyTorch/diffusers on the same weights, in one run.

    python -m benchmarks.throughput --config tiny|celebahq [--size S] [--threads 1] [--out FILE]
    python -m benchmarks.throughput --device-summary

Measured side by side (a random-init diffusers ``UNet2DModel``, every parameter perturbed by 0.02 randn, saved
with ``save_pretrained`` and loaded into JAX with ``load_unet``; ε of both is compared before anything is timed):

  (a) **UNet forward**: our jitted ``model.apply`` vs diffusers ``unet(x, t).sample`` under ``torch.no_grad``
      (stock attention processor, warmed up), images/s at a few batch sizes;
  (b) **batch Asyrp editing** of N inverted latents with a constant Δh: our
      ``jaxhspace.editing.asyrp_edit.asyrp_edit`` (one jitted program, vmap over images) vs the official
      per-image, per-step Python loop re-implemented in PyTorch (:mod:`benchmarks.torch_asyrp`; Δh injected by a
      forward hook on ``unet.mid_block``), official grid settings n_test 40, t_edit 500, t_boost 200 (η = 1 below,
      with the same noise on both sides); the final images are compared (max |diff|);
  (c) **Asyrp editor training**: steps/s of ``jaxhspace.editing.asyrp_train.make_train_step`` (jitted, one
      optimiser step per timestep, batch 1 as the official scripts) vs the official step in PyTorch
      (:func:`benchmarks.torch_asyrp.train_step`), same UNet, same DeltaBlock init and same random CLIP
      (``--config tiny``: a tiny CLIP; ``celebahq``: the ViT-B/32 architecture); the losses of the first steps are
      compared. A random text direction replaces the prompt templates (no tokenizer needed; cost is the same).

Reported: wall and process-CPU seconds per call (median over repeats; CPU time is the steadier number on a
shared machine), throughput, ratios ours/torch of throughput (> 1: ours is faster), and our jit compile time
separately (first call minus a warm call). Timings are never asserted. Configs: ``tiny`` (a small UNet at 32×32,
the default), ``celebahq`` (the google/ddpm-ema-celebahq-256 architecture at ``--size``, default 64), ``smoke``
(8×8, for the test). Output: ``benchmarks/results/throughput_<config>[_size<S>].json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time


from benchmarks.cpu_threads import cpus_usable, limit_cpu_threads  # noqa: E402  (imports no jax/torch)

if __name__ == "__main__" and "jax" not in sys.modules:  # XLA's intra-op pool = torch threads (as jacobian_svd)
    limit_cpu_threads(sys.argv[1:])

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import torch_asyrp as TA  # noqa: E402
from benchmarks.jacobian_svd import CELEBAHQ_UNET, SMOKE_UNET, TINY_UNET, jsonable  # noqa: E402
from jaxhspace.checkpoints import load_clip, load_unet  # noqa: E402
from jaxhspace.diffusion.schedule import asyrp_timesteps, make_schedule  # noqa: E402
from jaxhspace.editing import asyrp_edit as AE  # noqa: E402
from jaxhspace.editing.asyrp_train import (  # noqa: E402
    AsyrpTrainState, make_train_step, optimizer_from_spec, training_grid)
from jaxhspace.editing.editor_io import state_dict_to_editor_params  # noqa: E402
from jaxhspace.losses.clip_directional import image_features  # noqa: E402
from jaxhspace.models.editor import DeltaBlock, EditorConfig  # noqa: E402

# CLIP configs (transformers.CLIPConfig kwargs); vocab is irrelevant (no text is encoded).
_TEXT = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
             max_position_embeddings=16, projection_dim=32)
TINY_CLIP = dict(text_config=_TEXT, vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, image_size=32, patch_size=8, projection_dim=32), projection_dim=32)
SMOKE_CLIP = dict(text_config=dict(_TEXT, projection_dim=8), vision_config=dict(
    hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=8, patch_size=4,
    projection_dim=8), projection_dim=8)
VIT_B32_CLIP = dict(text_config=_TEXT)  # CLIPConfig's vision defaults are ViT-B/32 (224 px, patch 32, 12 layers)

CONFIGS = {
    "tiny": dict(unet=TINY_UNET, size=32, batches=(1, 4, 16), edit_images=4, n_test=40, n_train=40, clip=TINY_CLIP,
                 editor_groups=32),
    "celebahq": dict(unet=CELEBAHQ_UNET, size=64, batches=(1, 2, 4), edit_images=2, n_test=40, n_train=40,
                     clip=VIT_B32_CLIP, editor_groups=32),
    "smoke": dict(unet=SMOKE_UNET, size=8, batches=(1, 2), edit_images=2, n_test=4, n_train=4, clip=SMOKE_CLIP,
                  editor_groups=2),
}
# kwonminki/Asyrp_official@a6c82dc:script_train.sh:25-26, …:README.md:96-101
T_EDIT, T_BOOST = 500, 200
TRAIN_LR = 1e-3  # not the released 0.5: on a random UNet P_t at t = 999 amplifies Δh ~158x and 0.5 diverges


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------
def measure(fn, min_time: float = 1.0, min_reps: int = 3, max_reps: int = 200) -> dict:
    """Median wall / process-CPU seconds of ``fn()`` (which must block until done) over repeats lasting at least
    ``min_time`` seconds in total (and ``min_reps`` calls)."""
    walls, cpus = [], []
    t_end = time.perf_counter() + min_time
    while len(walls) < min_reps or (time.perf_counter() < t_end and len(walls) < max_reps):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return dict(wall_s=float(np.median(walls)), cpu_s=float(np.median(cpus)), wall_min_s=float(min(walls)),
                reps=len(walls))


def first_call_s(fn) -> float:
    """Wall seconds of the first (compiling) call of ``fn``."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _side(m: dict, items: float, unit: str) -> dict:
    """``measure`` result + throughput (``items`` per call) in ``unit``."""
    return dict(m, **{unit: items / m["wall_s"], f"{unit}_cpu": items / m["cpu_s"] if m["cpu_s"] > 0 else None})


def _compare(ours: dict, ref: dict, unit: str) -> dict:
    """Ratios ours/torch of throughput (wall and CPU)."""
    cpu = ours[f"{unit}_cpu"] / ref[f"{unit}_cpu"] if ours[f"{unit}_cpu"] and ref[f"{unit}_cpu"] else None
    return dict(ratio_ours_over_torch=ours[unit] / ref[unit], ratio_ours_over_torch_cpu=cpu)


# ---------------------------------------------------------------------------------------------
# Set-up: the same weights in both frameworks
# ---------------------------------------------------------------------------------------------
def _nchw(a) -> torch.Tensor:
    """NHWC array -> NCHW float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(a, np.float32).transpose(0, 3, 1, 2)))


def _nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


def build(name: str, size: int | None = None, seed: int = 0) -> dict:
    """Torch UNet (perturbed random init, stock attention) -> ``save_pretrained`` -> ``load_unet``; likewise a random
    transformers CLIP -> ``load_clip``. Returns a dict with both sides and the config."""
    from diffusers import UNet2DModel
    import transformers

    cfg = dict(CONFIGS[name])
    size = size or cfg["size"]
    torch.manual_seed(seed)
    tu = UNet2DModel(**dict(cfg["unet"], sample_size=size))
    with torch.no_grad():
        for p in tu.parameters():
            p.add_(0.02 * torch.randn_like(p))
    tu.eval().requires_grad_(False)
    tc = transformers.CLIPModel(transformers.CLIPConfig(**cfg["clip"])).eval().requires_grad_(False)
    with tempfile.TemporaryDirectory() as d:
        tu.save_pretrained(os.path.join(d, "unet"))
        tc.save_pretrained(os.path.join(d, "clip"))
        model, params = load_unet(os.path.join(d, "unet"))
        clip_model, clip_params = load_clip(os.path.join(d, "clip"))
    return dict(name=name, size=size, cfg=cfg, torch_unet=tu, model=model, params=params, torch_clip=tc,
                clip_model=clip_model, clip_params=clip_params, schedule=make_schedule(), seed=seed,
                n_params=int(sum(p.numel() for p in tu.parameters())))


def check_eps_agree(s: dict) -> dict:
    """Max |ε_JAX − ε_torch| on a batch of 2 (t = 10, 700)."""
    rng = np.random.default_rng(s["seed"])
    x = rng.standard_normal((2, s["size"], s["size"], 3)).astype(np.float32)
    t = np.array([10, 700])
    with torch.no_grad():
        ref = _nhwc(s["torch_unet"](_nchw(x), torch.from_numpy(t)).sample)
    ours = np.asarray(s["model"].apply({"params": s["params"]}, jnp.asarray(x), jnp.asarray(t)))
    return dict(eps_max_abs_diff=float(np.max(np.abs(ours - ref))), eps_max_abs=float(np.max(np.abs(ref))))


# ---------------------------------------------------------------------------------------------
# (a) UNet forward
# ---------------------------------------------------------------------------------------------
def bench_forward(s: dict, batches, min_time: float) -> list:
    """Per batch size: images/s of the jitted JAX forward and the diffusers forward (no_grad)."""
    model, tu = s["model"], s["torch_unet"]
    f = jax.jit(lambda p, x, t: model.apply({"params": p}, x, t))
    rows = []
    for b in batches:
        x = np.random.default_rng(b).standard_normal((b, s["size"], s["size"], 3)).astype(np.float32)
        t = np.linspace(10, 990, b).astype(np.int32)
        xj, tj, xt, tt = jnp.asarray(x), jnp.asarray(t), _nchw(x), torch.from_numpy(t.astype(np.int64))
        run_j = lambda: f(s["params"], xj, tj).block_until_ready()  # noqa: E731

        def run_t():
            with torch.no_grad():
                tu(xt, tt)

        first = first_call_s(run_j)
        ours = _side(measure(run_j, min_time), b, "images_per_s")
        run_t()  # warm-up
        ref = _side(measure(run_t, min_time), b, "images_per_s")
        rows.append(dict(batch=b, jax=dict(ours, compile_s=max(first - ours["wall_s"], 0.0)), torch=ref,
                         **_compare(ours, ref, "images_per_s")))
    return rows


# ---------------------------------------------------------------------------------------------
# (b) batch Asyrp editing
# ---------------------------------------------------------------------------------------------
def boost_noise(key, n_images: int, timesteps, shape) -> np.ndarray:
    """The boosting noise ``asyrp_edit`` draws (image b, step i: normal(fold_in(fold_in(key, b), i), [1, *shape])),
    as ``[B, S, C, H, W]`` for the torch loop."""
    z = [[np.asarray(jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, b), i), (1,) + tuple(shape)))[0]
          for i in range(len(timesteps))] for b in range(n_images)]
    return np.asarray(z, np.float32).transpose(0, 1, 4, 2, 3)


def edit_inputs(s: dict, n_images: int, n_test: int):
    """x_lat ``[N, S, S, 3]`` (our DDIM inversion, n_inv = n_test, of random images in [-1, 1], so that even a
    random UNet reconstructs images of moderate size), a constant Δh ``[h, w, C]`` (0.2·std(h) of x_lat at t = 999
    times a standard normal), the descending grid ``[n_test]`` and the boosting noise ``[N, n_test, 3, S, S]``."""
    rng = np.random.default_rng(s["seed"] + 1)
    x0 = rng.uniform(-1, 1, (n_images, s["size"], s["size"], 3)).astype(np.float32)
    x_lat = np.asarray(AE.invert(s["model"], s["params"], s["schedule"], jnp.asarray(x0), n_test))
    h = s["model"].apply({"params": s["params"]}, jnp.asarray(x_lat), jnp.full((n_images,), 999),
                         method=s["model"].encode)[0]
    dh = (0.2 * float(jnp.std(h)) * rng.standard_normal(h.shape[1:])).astype(np.float32)
    grid = asyrp_timesteps(n_test, 999)[::-1].copy()
    key = jax.random.PRNGKey(s["seed"])
    return x_lat, dh, grid, key, boost_noise(key, n_images, grid, x_lat.shape[1:])


def run_edits(s: dict, n_images: int, n_test: int, t_edit: int = T_EDIT, t_boost: int = T_BOOST):
    """Callables ``(ours, ref, ref64)`` running both implementations on the same inputs; each returns the edited
    images (ours ``[N,H,W,C]`` JAX array; torch ``[N,C,H,W]`` tensors, ``ref64`` in float64 on a float64 copy of the
    UNet: the float32 rounding floor of the comparison)."""
    x_lat, dh, grid, key, noise = edit_inputs(s, n_images, n_test)
    ac = np.asarray(s["schedule"].alphas_cumprod, np.float32)
    delta = AE.ConstantDelta(jnp.asarray(dh))
    xl = jnp.asarray(x_lat)
    dh_t = _nchw(dh[None])

    def ours():
        return AE.asyrp_edit(s["model"], s["params"], s["schedule"], x_lat=xl, delta=delta, scales=(1.0,),
                             n_test=n_test, t_edit=t_edit, t_boost=t_boost, key=key)[0].block_until_ready()

    xt = _nchw(x_lat)

    def ref():
        return TA.asyrp_edit_loop(s["torch_unet"], xt, lambda h, temb: dh_t, grid, ac, t_edit, t_boost, noise=noise)

    def ref64():
        u64 = copy.deepcopy(s["torch_unet"]).double()
        return TA.asyrp_edit_loop(u64, xt.double(), lambda h, temb: dh_t.double(), grid, ac.astype(np.float64), t_edit,
                                  t_boost, noise=noise.astype(np.float64))

    return ours, ref, ref64


def bench_edit(s: dict, n_images: int, n_test: int, min_time: float) -> dict:
    """Images/s of a full edit (reverse process from x_lat; inversion excluded) and the max |diff| of the images
    (raw, and clipped to [-1, 1] as saved: a random UNet's edits leave the range, up to |x| ~ 1e2)."""
    ours_fn, ref_fn, ref64_fn = run_edits(s, n_images, n_test)
    t0 = time.perf_counter()
    out_j = np.asarray(ours_fn())
    first = time.perf_counter() - t0
    out_t = _nhwc(ref_fn())
    out_64 = _nhwc(ref64_fn())
    ours = _side(measure(ours_fn, min_time, min_reps=2), n_images, "images_per_s")
    ref = _side(measure(ref_fn, min_time, min_reps=2), n_images, "images_per_s")
    grid = asyrp_timesteps(n_test, 999)
    n_edit = int(np.sum(grid >= T_EDIT))
    return dict(n_images=n_images, n_test=n_test, t_edit=T_EDIT, t_boost=T_BOOST, edited_steps=n_edit,
                torch_unet_forwards_per_image=n_test + n_edit, jax_passes_per_image=dict(encoder=n_test,
                decoder=n_test + n_edit), max_abs_diff=float(np.max(np.abs(out_j - out_t))),
                max_abs_diff_clipped=float(np.max(np.abs(np.clip(out_j, -1, 1) - np.clip(out_t, -1, 1)))),
                max_abs_diff_torch32_vs_torch64=float(np.max(np.abs(out_t - out_64))),
                max_abs_diff_ours_vs_torch64=float(np.max(np.abs(out_j - out_64))),
                max_abs_image=float(np.max(np.abs(out_t))), jax=dict(ours, compile_s=max(first - ours["wall_s"], 0.0)),
                torch=ref, **_compare(ours, ref, "images_per_s"))


# ---------------------------------------------------------------------------------------------
# (c) editor training
# ---------------------------------------------------------------------------------------------
class Trainers:
    """Both training loops from the same state: the DeltaBlock init (torch default init, copied to Flax), one real
    image x0 (its CLIP features on each side), its latent x_lat, a random unit text direction, cos 0.8."""

    def __init__(self, s: dict, n_train: int, lambda_clip: float = 1.0, lambda_l1: float = 3.0, cos: float = 0.8):
        self.s, self.cos, self.lc, self.ll = s, cos, lambda_clip, lambda_l1
        model, tc = s["model"], s["torch_clip"]
        self.ts, self.tps = training_grid(n_train, T_EDIT)
        c_mid, temb = int(model.config.block_out_channels[-1]), int(model.config.time_embed_dim)
        groups = s["cfg"]["editor_groups"]
        torch.manual_seed(s["seed"] + 2)
        self.torch_init = TA.TorchDeltaBlock(c_mid, temb, groups).state_dict()
        self.editor = DeltaBlock(EditorConfig(channels=c_mid, temb_dim=temb, num_groups=groups))
        rng = np.random.default_rng(s["seed"] + 3)
        self.x0 = rng.uniform(-1, 1, (1, s["size"], s["size"], 3)).astype(np.float32)
        self.x_lat = rng.standard_normal(self.x0.shape).astype(np.float32)
        p = int(tc.config.projection_dim)
        td = rng.standard_normal(p).astype(np.float32)
        self.text_dir = td / np.linalg.norm(td)
        self.clip_size = int(tc.config.vision_config.image_size)
        with torch.no_grad():
            self.feat_t = TA.clip_image_features(tc, _nchw(self.x0), self.clip_size)
        self.feat_j = image_features(s["clip_model"], s["clip_params"], jnp.asarray(self.x0), validate=False)
        spec = ("sgd", TRAIN_LR, len(self.ts), 20, 0.9, 0.0)
        self.optimizer = optimizer_from_spec(spec)
        self.step_fn = make_train_step(model, self.editor, s["clip_model"], spec, lambda_clip, lambda_l1, "torch")
        self.frozen = {"unet": s["params"], "clip": s["clip_params"], "text_dir": jnp.asarray(self.text_dir),
                       "cos": jnp.asarray(cos, jnp.float32), "schedule": s["schedule"]}

    def jax_walk(self, n_steps: int | None = None) -> list:
        """One batch: the training timesteps (or the first ``n_steps``) from a fresh editor; the per-step losses."""
        eparams = jax.tree_util.tree_map(jnp.asarray, state_dict_to_editor_params(self.editor, self.torch_init))
        z = jnp.zeros(self.x0.shape, jnp.float32)
        state = AsyrpTrainState(jnp.array(0, jnp.int32), eparams, self.optimizer.init(eparams), z, jnp.zeros_like(z))
        xl, losses = jnp.asarray(self.x_lat), []
        for k in range(n_steps or len(self.ts)):
            state, m = self.step_fn(state, self.frozen, xl, self.feat_j, jnp.int32(self.ts[k]), jnp.int32(self.tps[k]),
                                    jnp.bool_(k == 0))
            losses.append(m["loss"])
        return [float(v) for v in losses]

    def torch_walk(self, n_steps: int | None = None) -> list:
        s = self.s
        c = self.editor.config
        editor = TA.TorchDeltaBlock(c.channels, c.temb_dim, c.num_groups)
        editor.load_state_dict(self.torch_init)
        opt = torch.optim.SGD(editor.parameters(), lr=TRAIN_LR, momentum=0.0)
        ac = np.asarray(s["schedule"].alphas_cumprod, np.float32)
        x_e = x_r = _nchw(self.x_lat)
        td, losses = torch.from_numpy(self.text_dir), []
        for k in range(n_steps or len(self.ts)):
            x_e, x_r, loss = TA.train_step(s["torch_unet"], editor, s["torch_clip"], opt, x_e, x_r, self.feat_t, td,
                                           int(self.ts[k]), int(self.tps[k]), ac, self.lc, self.ll, self.cos,
                                           self.clip_size)
            losses.append(loss)
        return losses


def bench_train(s: dict, n_train: int, min_time: float) -> dict:
    """Steps/s over one batch's walk of the training grid (K steps, batch 1) and the first losses of both sides."""
    tr = Trainers(s, n_train)
    k = len(tr.ts)
    t0 = time.perf_counter()
    loss_j = tr.jax_walk(2)
    first = time.perf_counter() - t0
    loss_t = tr.torch_walk(2)
    ours = _side(measure(lambda: tr.jax_walk(), min_time, min_reps=2), k, "steps_per_s")
    ref = _side(measure(lambda: tr.torch_walk(), min_time, min_reps=2), k, "steps_per_s")
    per_step = ours["wall_s"] / k
    return dict(steps_per_walk=k, timesteps=tr.ts.tolist(), batch_size=1, lr=TRAIN_LR, first_losses_jax=loss_j,
                first_losses_torch=loss_t, loss_max_rel_diff=float(max(abs(a - b) / max(abs(b), 1e-12)
                                                                       for a, b in zip(loss_j, loss_t))),
                clip_image_size=tr.clip_size,
                clip_vision_layers=int(s["torch_clip"].config.vision_config.num_hidden_layers),
                jax=dict(ours, compile_s=max(first - 2 * per_step, 0.0)), torch=ref,
                **_compare(ours, ref, "steps_per_s"))


# ---------------------------------------------------------------------------------------------
# Environment, report, driver
# ---------------------------------------------------------------------------------------------
def device_summary() -> dict:
    """JAX devices, kind, count, platform, default dtype and memory stats (if the backend has them)."""
    devs = jax.devices()
    mem = {}
    for d in devs:
        try:
            mem[str(d)] = d.memory_stats()
        except Exception as e:  # noqa: BLE001 - CPU backends may not implement it
            mem[str(d)] = f"unavailable ({type(e).__name__})"
    return dict(devices=[str(d) for d in devs], device_kind=devs[0].device_kind, device_count=jax.device_count(),
                local_device_count=jax.local_device_count(), platform=devs[0].platform, backend=jax.default_backend(),
                default_float_dtype=str(jnp.asarray(1.0).dtype), x64=bool(jax.config.jax_enable_x64),
                default_matmul_precision=str(jax.config.jax_default_matmul_precision), memory_stats=mem)


def environment(threads: int) -> dict:
    import diffusers
    import flax
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    dev = device_summary()
    return dict(jax_device=f"{dev['platform']}:{dev['device_kind']}", jax_device_count=dev["device_count"],
                torch_device="cpu", dtype="float32", jax_default_matmul_precision=dev["default_matmul_precision"],
                python=platform.python_version(), cpu=cpu,
                versions=dict(jax=jax.__version__, flax=flax.__version__, torch=torch.__version__,
                              diffusers=diffusers.__version__, transformers=transformers.__version__,
                              numpy=np.__version__),
                threads=dict(requested=threads, cpu_count=os.cpu_count(),
                             cpus_usable=cpus_usable(),
                             torch_num_threads=torch.get_num_threads(),
                             torch_interop_threads=torch.get_num_interop_threads(),
                             xla_flags=os.environ.get("XLA_FLAGS", "")),
                loadavg_start=list(os.getloadavg()))


def run_benchmark(name: str, size: int | None = None, batches=None, edit_images: int | None = None,
                  n_test: int | None = None, n_train: int | None = None, min_time: float = 2.0, threads: int = 1,
                  seed: int = 0, parts=("forward", "edit", "train"), log=print) -> dict:
    """Everything for one config; returns the JSON-ready dict."""
    torch.set_num_threads(threads)
    t_start = time.perf_counter()
    env = environment(threads)
    s = build(name, size, seed)
    cfg = s["cfg"]
    res = dict(config=name, size=s["size"], source="random-init diffusers UNet2DModel (perturbed 0.02 randn)",
               unet_config=dict(cfg["unet"], sample_size=s["size"]), n_params=s["n_params"],
               h_shape=list(s["model"].hspace_shape(s["size"], s["size"])), min_time_s=min_time,
               agreement=check_eps_agree(s), environment=env)
    if "forward" in parts:
        log(f"[{name}] (a) UNet forward")
        res["forward"] = bench_forward(s, batches or cfg["batches"], min_time)
    if "edit" in parts:
        log(f"[{name}] (b) batch Asyrp editing")
        res["edit"] = bench_edit(s, edit_images or cfg["edit_images"], n_test or cfg["n_test"], min_time)
    if "train" in parts:
        log(f"[{name}] (c) editor training")
        res["train"] = bench_train(s, n_train or cfg["n_train"], min_time)
    res["environment"]["loadavg_end"] = list(os.getloadavg())
    res["total_wall_s"] = time.perf_counter() - t_start
    return res


def _f(v, fmt="#.3g"):
    return "—" if v is None else format(v, fmt)


def render_report(res: dict) -> str:
    """Markdown: header facts and one table (per-call wall/CPU, throughput, ratios, compile time)."""
    env = res["environment"]
    head = [f"## Throughput: {res['config']} ({res['size']}×{res['size']}, {res['n_params']:,} UNet parameters, "
            f"h {res['h_shape']})",
            f"{res['source']}; ε max|JAX − torch| = {res['agreement']['eps_max_abs_diff']:.1e}; JAX "
            f"{env['jax_device']} ×{env['jax_device_count']}, torch cpu, float32; threads torch "
            f"{env['threads']['torch_num_threads']} / XLA {env['threads']['requested']} of "
            f"{env['threads']['cpu_count']} "
            f"CPUs ({env['cpu']}); load avg {env['loadavg_start'][0]:.1f}→{env['loadavg_end'][0]:.1f}; "
            f"jax {env['versions']['jax']}, torch {env['versions']['torch']}, diffusers {env['versions']['diffusers']}",
            "",
            "| benchmark | setting | unit | ours (JAX) | torch | ours/torch (wall) | ours/torch (CPU) | "
            "JAX ms/call | torch ms/call | JAX CPU ms | torch CPU ms | JAX compile s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def row(bench, setting, unit, r):
        j, t = r["jax"], r["torch"]
        head.append(f"| {bench} | {setting} | {unit.replace('_', ' ')} | {_f(j[unit])} | {_f(t[unit])} | "
                    f"{_f(r['ratio_ours_over_torch'], '.2f')} | {_f(r['ratio_ours_over_torch_cpu'], '.2f')} | "
                    f"{j['wall_s'] * 1e3:.1f} | {t['wall_s'] * 1e3:.1f} | {j['cpu_s'] * 1e3:.1f} | "
                    f"{t['cpu_s'] * 1e3:.1f} | {j['compile_s']:.1f} |")

    for r in res.get("forward", []):
        row("(a) UNet forward", f"batch {r['batch']}", "images_per_s", r)
    if "edit" in res:
        e = res["edit"]
        row("(b) Asyrp edit", f"{e['n_images']} images, n_test {e['n_test']}, t_edit {e['t_edit']}, "
            f"t_boost {e['t_boost']}", "images_per_s", e)
    if "train" in res:
        t = res["train"]
        row("(c) editor training", f"batch 1, {t['steps_per_walk']} steps/walk, CLIP {t['clip_image_size']} px "
            f"×{t['clip_vision_layers']} layers", "steps_per_s", t)
    head.append("")
    if "edit" in res:
        e = res["edit"]
        head.append(f"(b) images ours vs torch: max |diff| = {e['max_abs_diff']:.1e} (max |image| "
                    f"{e['max_abs_image']:.2f}: a random UNet leaves [-1, 1]), {e['max_abs_diff_clipped']:.1e} on the "
                    f"images clipped to [-1, 1] as saved; float32 rounding floor: torch float32 vs float64 "
                    f"{e['max_abs_diff_torch32_vs_torch64']:.1e}, ours vs torch float64 "
                    f"{e['max_abs_diff_ours_vs_torch64']:.1e}. Torch makes {e['torch_unet_forwards_per_image']} full "
                    "UNet forwards per "
                    f"image (two where t ≥ t_edit: the hook cannot share the encoder), ours "
                    f"{e['jax_passes_per_image']['encoder']} encoder + {e['jax_passes_per_image']['decoder']} decoder "
                    "passes (as the official UNet).")
    if "train" in res:
        t = res["train"]
        head.append(f"(c) first losses ours {', '.join(f'{v:.6g}' for v in t['first_losses_jax'])} vs torch "
                    f"{', '.join(f'{v:.6g}' for v in t['first_losses_torch'])} (max rel diff "
                    f"{t['loss_max_rel_diff']:.1e}).")
    head.append(f"Ratios are throughput ours/torch (> 1: ours faster); ms/call are per batch (a), per full edit of "
                f"all images (b), per walk of the training grid (c). Total wall {res['total_wall_s']:.0f} s.")
    return "\n".join(head)


def write_results(res: dict, json_path: str) -> tuple[str, str]:
    """``json_path`` and the markdown report beside it (same stem, ``.md``)."""
    os.makedirs(os.path.dirname(json_path) or ".", exist_ok=True)
    with open(json_path, "w") as fh:
        json.dump(jsonable(res), fh, indent=1)
    md = os.path.splitext(json_path)[0] + ".md"
    with open(md, "w") as fh:
        fh.write(render_report(res) + "\n")
    return json_path, md


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    p.add_argument("--size", type=int, default=None, help="input resolution (default: tiny 32, celebahq 64)")
    p.add_argument("--batches", default=None, help="comma-separated forward batch sizes")
    p.add_argument("--edit-images", type=int, default=None)
    p.add_argument("--n-test", type=int, default=None, help="Asyrp generation grid (official 40)")
    p.add_argument("--n-train", type=int, default=None, help="Asyrp training grid (official 40)")
    p.add_argument("--parts", default="forward,edit,train")
    p.add_argument("--min-time", type=float, default=2.0, help="seconds of timed repeats per measurement")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads = XLA intra-op threads (XLA_FLAGS set before jax is imported when run as a "
                        "module); default 1, as benchmarks/jacobian_svd.py on this shared machine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON path (the .md goes beside it)")
    p.add_argument("--device-summary", action="store_true", help="print the JAX device summary and exit")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.device_summary:
        print(json.dumps(device_summary(), indent=1, default=str))
        return 0
    batches = tuple(int(b) for b in a.batches.split(",")) if a.batches else None
    res = run_benchmark(a.config, a.size, batches, a.edit_images, a.n_test, a.n_train, a.min_time, a.threads, a.seed,
                        tuple(a.parts.split(",")))
    print(render_report(res))
    size_tag = "" if a.size is None or a.size == CONFIGS[a.config]["size"] else f"_size{a.size}"
    paths = write_results(res, a.out or f"benchmarks/results/throughput_{a.config}{size_tag}.json")
    print("wrote " + " and ".join(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
