#!/usr/bin/env python3
"""The PyTorch reference for bench/bench.ts: the usual diffusers + peft LoRA training step, timed
on the same machine as our bench so BENCHMARKS.md's "vs PyTorch" ratios compare like with like.

What it runs (issue #9's reference, with bench.ts' shapes and hyper-parameters):
  diffusers UNet2DConditionModel built from the config bench/model-configs.ts holds (seeded random
  weights at real size), frozen, in fp16 or bf16; peft LoRA rank 16 (alpha 16) on
  to_q/to_k/to_v/to_out.0, LoRA weights in float32; SDPA attention (AttnProcessor2_0); latents,
  noise and text embeddings precomputed on the device; per step: DDPM noising (scaled_linear,
  beta 0.00085..0.012, 1000 steps) at timesteps spread over 0..999, UNet forward under autocast,
  MSE loss in float32, backward, clip_grad_norm_(1.0), AdamW(lr 1e-4), zero_grad(set_to_none).
  fp16 also gets dynamic loss scaling (torch.amp.GradScaler), as accelerate's fp16 mixed precision
  does and as our bench's float16 step does; bf16 needs none.

Each batch size runs in a fresh process (this script starts itself once per batch) so that the
nvidia-smi peak and torch's peak counters of one batch are not left over from another.

The UNet configs come from unet-configs.json, which bench/pytorch/export-configs.ts writes from
bench/model-configs.ts (scripts/gpu-bundle.sh puts both in .gpu-build/). diffusers is not
installed on the GPU machine: gpu-bundle.sh packs its source, huggingface/diffusers at the commit
pinned there (checked with 58eb52c0803ea9af3abec60841c2a093bdf1f951, 0.40.0.dev0), as
.gpu-build/diffusers-src.tar.xz, with diffusers-commit.txt beside the package. On the device:

  mkdir -p /tmp/pyref && tar xJf .gpu-build/diffusers-src.tar.xz -C /tmp/pyref &&
  PYTHONPATH=/tmp/pyref python3 .gpu-build/reference.py --model sd15 --batch 1,4 --json $OUT/pytorch.json

usage: reference.py [--model sd15|sdxl|tiny-sdxl] [--batch 1,4] [--resolution PX]
                    [--precision fp16|bf16] [--steps 10] [--warmup 2] [--rank 16]
                    [--device cuda|cpu] [--configs unet-configs.json] [--json FILE]
Prints one JSON object per batch; --json appends them to FILE (a JSON array).
"""
import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
ADAMW = {"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2}  # bench.ts' DEFAULT_ADAMW
MAX_GRAD_NORM = 1.0
NOISE_SCHEDULE = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}
TOKENS = 77
WEIGHT_SEED = 1234

# What `from diffusers import UNet2DConditionModel` and this script import (module: package name),
# found by hiding each one: checked up front so a missing one is named, not a deep traceback.
REQUIRED_MODULES = {
    "torch": "torch", "peft": "peft", "numpy": "numpy", "huggingface_hub": "huggingface_hub",
    "safetensors": "safetensors", "filelock": "filelock", "regex": "regex", "requests": "requests",
    "PIL": "pillow", "httpx": "httpx", "packaging": "packaging", "typing_extensions": "typing_extensions",
    "yaml": "pyyaml", "tqdm": "tqdm",
}


def fail(message: str) -> None:
    print(f"reference.py: {message}", file=sys.stderr)
    sys.exit(2)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="PyTorch (diffusers + peft) LoRA training-step reference benchmark")
    parser.add_argument("--model", default="sd15", help="a key of unet-configs.json: sd15, sdxl or tiny-sdxl")
    parser.add_argument("--batch", default="1,4", help="comma-separated batch sizes, each run in its own process")
    parser.add_argument("--resolution", type=int, help="image size in pixels (latents are 1/8); default 1024 for sdxl, 512 for sd15, 64 for tiny-sdxl")
    parser.add_argument("--precision", choices=["fp16", "bf16"], help="frozen UNet dtype and autocast dtype; default fp16 for sd15, bf16 otherwise")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (the median is reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after the first one")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--configs", default=str(Path(__file__).resolve().parent / "unet-configs.json"),
                        help="the JSON bench/pytorch/export-configs.ts writes (default: beside this script)")
    parser.add_argument("--json", help="append the results to this JSON array file")
    args = parser.parse_args()
    try:
        args.batches = [int(b) for b in args.batch.split(",") if b.strip()]
    except ValueError:
        fail(f"--batch must be comma-separated integers, got {args.batch!r}")
    if not args.batches or min(args.batches) < 1:
        fail(f"--batch needs at least one size of 1 or more, got {args.batch!r}")
    if args.resolution is None:
        args.resolution = {"sdxl": 1024, "sd15": 512}.get(args.model, 64)
    if args.resolution % 8:
        fail(f"--resolution must be a multiple of 8 (latents are 1/8 of it), got {args.resolution}")
    if args.precision is None:
        args.precision = "fp16" if args.model == "sd15" else "bf16"
    if args.steps < 1 or args.warmup < 0:
        fail(f"--steps must be 1 or more and --warmup 0 or more, got {args.steps} and {args.warmup}")
    return args


def load_unet_config(path: str, model: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            models = json.load(f)["models"]
    except FileNotFoundError:
        fail(f"{path} not found: write it with `npx tsx bench/pytorch/export-configs.ts {path}` "
             "(scripts/gpu-bundle.sh puts it in .gpu-build/), or name another with --configs")
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        fail(f"{path} is not the JSON bench/pytorch/export-configs.ts writes ({e})")
    if model not in models:
        fail(f"--model {model!r} is not in {path} (it has: {', '.join(models)})")
    return {k: v for k, v in models[model].items() if not k.startswith("_")}


def import_libraries():
    """torch, peft and diffusers' pieces, or a message naming what is missing and how to bring it."""
    missing = [f"{module} (package {package})" for module, package in REQUIRED_MODULES.items()
               if importlib.util.find_spec(module) is None]
    if missing:
        fail(f"missing Python modules: {', '.join(missing)}; on the GPU machine (no network), carry "
             "their wheels along and install them to a folder on PYTHONPATH")
    if importlib.util.find_spec("diffusers") is None:
        fail("diffusers is not importable: `mkdir -p /tmp/pyref && tar xJf .gpu-build/diffusers-src.tar.xz -C /tmp/pyref` "
             "and run with PYTHONPATH=/tmp/pyref (scripts/gpu-bundle.sh makes the tarball)")
    try:
        import torch
        import peft
        import diffusers
        from diffusers import DDPMScheduler, UNet2DConditionModel
        from diffusers.models.attention_processor import AttnProcessor2_0
        from diffusers.training_utils import cast_training_params
    except ModuleNotFoundError as e:
        fail(f"importing diffusers needs the Python module {e.name!r}, which is not installed here ({e})")
    return torch, peft, diffusers, DDPMScheduler, UNet2DConditionModel, AttnProcessor2_0, cast_training_params


class GpuMemoryPoller:
    """Peak GPU memory of this process as nvidia-smi sees it (CUDA context and allocator cache
    included, like bench.ts' peakGpuMemoryGiB), polled every 200 ms by a reader thread."""

    def __init__(self) -> None:
        self.peak_mib = 0.0
        self.pid = str(os.getpid())
        try:
            self.child = subprocess.Popen(
                ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits", "-lms", "200"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            self.child = None
            return
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.child.stdout:
            fields = [f.strip() for f in line.split(",")]
            if len(fields) == 2 and fields[0] == self.pid and fields[1].isdigit():
                self.peak_mib = max(self.peak_mib, float(fields[1]))

    def stop(self):
        """The peak in GiB, or None where nvidia-smi is missing or never listed this process."""
        if self.child is None:
            return None
        time.sleep(0.3)  # one more sample after the last step
        self.child.terminate()
        self.child.wait()
        self.thread.join(timeout=2)
        return self.peak_mib / 1024 if self.peak_mib > 0 else None


def append_json(path: str, results: list) -> None:
    """Adds `results` to the JSON array in `path` (made if missing), written atomically."""
    existing = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            try:
                existing = json.load(f)
            except json.JSONDecodeError as e:
                fail(f"{path}: not JSON ({e}); --json appends to a JSON array")
        if not isinstance(existing, list):
            fail(f"{path}: holds a JSON {type(existing).__name__}, but --json appends to a JSON array")
    temp = f"{path}.tmp-{os.getpid()}"
    with open(temp, "w", encoding="utf-8") as f:
        json.dump(existing + results, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)


def bench_one(args: argparse.Namespace, batch: int) -> dict:
    config = load_unet_config(args.configs, args.model)
    torch, peft, diffusers, DDPMScheduler, UNet2DConditionModel, AttnProcessor2_0, cast_training_params = import_libraries()
    from peft import LoraConfig

    if args.device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda, but torch sees no CUDA device (use --device cpu for a CPU check)")
    device = torch.device(args.device)
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[args.precision]
    # Our bench asks cuDNN for an exhaustive convolution search; this is PyTorch's equivalent.
    torch.backends.cudnn.benchmark = True

    t0 = time.perf_counter()
    torch.manual_seed(WEIGHT_SEED)
    with device:  # parameters are made and initialised on the device: SDXL's float32 init on the CPU takes a minute
        unet = UNet2DConditionModel(**config)
    unet.to(dtype=amp_dtype)
    unet.requires_grad_(False)
    unet.set_attn_processor(AttnProcessor2_0())  # SDPA (diffusers' default on torch 2), named so it cannot drift
    unet.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS))
    cast_training_params(unet, dtype=torch.float32)  # the trainable LoRA weights in float32, as diffusers' LoRA scripts do
    unet.train()
    lora_params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(lora_params, **ADAMW)
    scaler = torch.amp.GradScaler(args.device, enabled=args.precision == "fp16")
    scheduler = DDPMScheduler(**NOISE_SCHEDULE)

    latent = args.resolution // 8
    generator = torch.Generator(device).manual_seed(1)
    latents = torch.randn(batch, config["in_channels"], latent, latent, generator=generator, device=device, dtype=amp_dtype)  # [B, 4, H/8, W/8]
    noise = torch.randn(latents.shape, generator=generator, device=device, dtype=amp_dtype)  # [B, 4, H/8, W/8]
    timesteps = torch.tensor([(i * 397 + 11) % 1000 for i in range(batch)], device=device, dtype=torch.long)  # [B], bench.ts' spread
    context_dim = config["cross_attention_dim"]
    encoder_hidden_states = torch.randn(batch, TOKENS, context_dim, generator=generator, device=device, dtype=amp_dtype)  # [B, 77, C]
    added_cond_kwargs = None
    if config.get("addition_embed_type") == "text_time":
        # SDXL micro-conditioning: pooled text embeds [B, proj_in - 6 * time_dim] (1280 for SDXL) and
        # time ids [B, 6] of a square image at the bench resolution, uncropped (as bench.ts feeds).
        text_embeds_dim = config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
        r = args.resolution
        added_cond_kwargs = {
            "text_embeds": torch.randn(batch, text_embeds_dim, generator=generator, device=device, dtype=amp_dtype),  # [B, 1280]
            "time_ids": torch.tensor([[r, r, 0, 0, r, r]] * batch, device=device, dtype=amp_dtype),  # [B, 6]
        }
    setup_s = time.perf_counter() - t0

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def train_step() -> "torch.Tensor":
        with torch.autocast(device.type, dtype=amp_dtype):
            noisy_latents = scheduler.add_noise(latents, noise, timesteps)  # [B, 4, h, w]
            prediction = unet(noisy_latents, timesteps, encoder_hidden_states, added_cond_kwargs=added_cond_kwargs, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(prediction.float(), noise.float())  # epsilon target
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(lora_params, MAX_GRAD_NORM)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return loss

    if device.type == "cuda":
        torch.cuda.empty_cache()  # drop the float32 build's cache: the peaks below are the training step's
        torch.cuda.reset_peak_memory_stats()
    poller = GpuMemoryPoller() if device.type == "cuda" else None

    t_first = time.perf_counter()
    loss = train_step()
    synchronize()
    first_step_s = time.perf_counter() - t_first
    for _ in range(args.warmup):
        loss = train_step()
    synchronize()
    times = []
    scale_before = scaler.get_scale() if scaler.is_enabled() else None
    skipped_steps = 0
    for _ in range(args.steps):
        synchronize()
        start = time.perf_counter()
        loss = train_step()
        synchronize()
        times.append(time.perf_counter() - start)
        if scaler.is_enabled():
            # GradScaler lowers its scale when it skips a step for inf/nan gradients (a cheaper step)
            scale_after = scaler.get_scale()
            skipped_steps += scale_after < scale_before
            scale_before = scale_after
    peak_gpu_gib = poller.stop() if poller else None

    median_s = statistics.median(times)
    commit_file = Path(diffusers.__file__).resolve().parent.parent / "diffusers-commit.txt"
    gib = lambda n: round(n / 2**30, 2)  # noqa: E731
    processors = sorted({type(p).__name__ for p in unet.attn_processors.values()})
    result = {
        "model": f"{args.model} (seeded random weights)",
        "implementation": "pytorch reference (diffusers UNet2DConditionModel + peft LoRA)",
        "device": args.device,
        "deviceName": torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'cpu'} x{os.cpu_count()}",
        "date": datetime.date.today().isoformat(),
        "resolution": args.resolution,
        "batch": batch,
        "precision": args.precision,
        "attention": processors,
        "loraRank": args.rank,
        "loraTargets": LORA_TARGETS,
        "loraParameters": sum(p.numel() for p in lora_params),
        "gradScaler": scaler.is_enabled(),
        "gradScalerSkippedSteps": skipped_steps if scaler.is_enabled() else None,
        "steps": args.steps,
        "warmup": args.warmup,
        "itPerSec": round(1 / median_s, 3),
        "imagesPerSec": round(batch / median_s, 3),
        "medianStepMs": round(median_s * 1000, 1),
        "minStepMs": round(min(times) * 1000, 1),
        "maxStepMs": round(max(times) * 1000, 1),
        "timeToFirstStepS": round(setup_s + first_step_s, 2),
        "setupS": round(setup_s, 2),
        "peakGpuMemoryGiB": round(peak_gpu_gib, 2) if peak_gpu_gib is not None else None,
        "torchMaxAllocatedGiB": gib(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None,
        "torchMaxReservedGiB": gib(torch.cuda.max_memory_reserved(device)) if device.type == "cuda" else None,
        "torchVersion": torch.__version__,
        "cudaVersion": torch.version.cuda,
        "diffusersVersion": diffusers.__version__,
        "diffusersCommit": commit_file.read_text().strip() if commit_file.exists() else None,
        "peftVersion": peft.__version__,
        "finalLoss": round(loss.item(), 6),
    }
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    args = parse_args()
    load_unet_config(args.configs, args.model)  # fail before starting any process
    if len(args.batches) == 1:
        result = bench_one(args, args.batches[0])
        if args.json:
            append_json(args.json, [result])
        return
    # One fresh process per batch size: peaks (nvidia-smi's above all) stay per batch.
    failed = []
    for batch in args.batches:
        argv = [sys.executable, str(Path(__file__).resolve()), "--model", args.model, "--batch", str(batch),
                "--resolution", str(args.resolution), "--precision", args.precision, "--steps", str(args.steps),
                "--warmup", str(args.warmup), "--rank", str(args.rank), "--device", args.device, "--configs", args.configs]
        if args.json:
            argv += ["--json", args.json]
        if subprocess.run(argv).returncode != 0:
            failed.append(batch)
    if failed:
        fail(f"batch {', '.join(map(str, failed))} failed (see above)")


if __name__ == "__main__":
    main()
