#!/usr/bin/env python3
"""PyTorch reference timings for the dpzo performance comparison (GPU host).

Tested against: Python 3.12, torch 2.11.0+cu130, transformers 5.17.0 (the H200 host's
/opt/torch/.venv). Models are built with random weights from the published configs committed at
crates/trainer/configs/<model>.json (no hub access needed).

Methods (per step, median of --repeats after --warmup), named as in results/perf/zo_step.csv:
  infer     one forward whose loss uses only the label-word logits at one position per example
  zo        MeZO / DPZero-style two-point DP-ZO step on that loss: per-tensor in-place
            perturbation from a re-seeded torch generator (+eps, -2eps, +eps restore, update),
            per-example loss differences clipped and noised (scalar), i.e. four weight passes
  perturb   one such perturbation pass over all weights (not a zo_step.csv method)
  backprop  backprop + AdamW
  dp-sgd    DP-SGD with per-sample gradients (torch.func vmap(grad)), clipping, Gaussian noise,
            at the setting's batch and at each --psg-batches size (until one runs out of memory)
Writes CSV rows: model,dtype,batch,seq,method,impl,ms_median,peak_bytes (impl=pytorch-reference)
where peak_bytes is device memory in use (torch.cuda.mem_get_info: total - free) after the
method minus the reading taken after CUDA initialised, before the model: the same quantity
`repro memory` reports for ours. The caching allocator's own figures (max_memory_allocated,
max_memory_reserved) go to <out>.allocator.csv.

Usage: python3 scripts/perf/reference_pytorch.py --out results/perf/reference.csv
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
import transformers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# (model, dtype, batch, seq) as in docs/gpu.md's table.
SETTINGS = [
    ("roberta-large", torch.float32, 64, 128),
    ("opt-1.3b", torch.float16, 16, 256),
    ("opt-2.7b", torch.float16, 16, 256),
    ("smollm2-135m", torch.float32, 64, 64),
]
LABEL_WORDS = 2
DTYPE_NAMES = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}


def dtype_name(dtype):
    """The dtype column; f32 with TF32 cuBLAS matmuls (TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1, as
    `repro memory` labels it) is `tf32`."""
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return DTYPE_NAMES[dtype]


def build_model(name, dtype, device):
    with open(os.path.join(ROOT, "crates", "trainer", "configs", f"{name}.json")) as f:
        fields = json.load(f)
    config = transformers.AutoConfig.for_model(fields.pop("model_type"), **fields)
    config.attn_implementation = "sdpa"
    torch.manual_seed(0)
    cls = {
        "roberta": transformers.RobertaForMaskedLM,
        "llama": transformers.LlamaForCausalLM,
    }.get(config.model_type, transformers.OPTForCausalLM)
    # Built on the GPU in the target dtype: initialising billions of weights on the CPU in f32
    # first takes minutes.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = cls(config)
    finally:
        torch.set_default_dtype(previous)
    return model.to(device=device, dtype=dtype).eval()


def label_word_logits(model, input_ids, attention_mask, positions, label_ids):
    """Logits of the label words at one position per example: [B, n_labels], f32."""
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    if model.config.model_type == "roberta":
        hidden = model.roberta(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        h = hidden[rows, positions]
        head = model.lm_head
        h = head.layer_norm(F.gelu(head.dense(h)))
        logits = h @ head.decoder.weight[label_ids].t() + head.bias[label_ids]
    elif model.config.model_type == "llama":
        hidden = model.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        h = hidden[rows, positions]
        logits = h @ model.lm_head.weight[label_ids].t()
    else:
        hidden = model.model.decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        h = hidden[rows, positions]
        logits = h @ model.lm_head.weight[label_ids].t()
    return logits.float()


def per_example_loss(model, batch):
    logits = label_word_logits(model, *batch[:4])
    return F.cross_entropy(logits, batch[4], reduction="none")


def make_batch(config, batch, seq, device):
    g = torch.Generator(device="cpu").manual_seed(1)
    input_ids = torch.randint(4, config.vocab_size, (batch, seq), generator=g).to(device)
    attention_mask = torch.ones(batch, seq, dtype=torch.long, device=device)
    positions = torch.full((batch,), seq - 1, dtype=torch.long, device=device)
    label_ids = torch.tensor([1000, 2000], device=device)
    labels = torch.randint(0, LABEL_WORDS, (batch,), generator=g).to(device)
    return input_ids, attention_mask, positions, label_ids, labels


def perturb(params, seed, scale):
    """MeZO's in-place perturbation: one re-seeded generator, one normal tensor per parameter."""
    torch.manual_seed(seed)
    for p in params:
        z = torch.normal(mean=0, std=1, size=p.size(), device=p.device, dtype=p.dtype)
        p.data.add_(z, alpha=scale)


def device_used():
    free, total = torch.cuda.mem_get_info()
    return total - free


BASELINE = [None]


def measure(step, warmup, repeats):
    """(median ms, device bytes above the baseline, max allocated, max reserved)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return (statistics.median(times), device_used() - BASELINE[0],
            torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved())


def run_setting(name, dtype, batch_size, seq, args, write, write_allocator):
    device = torch.device("cuda")
    model = build_model(name, dtype, device)
    batch = make_batch(model.config, batch_size, seq, device)
    batches = {batch_size: batch}
    params = [p for p in model.parameters() if p.requires_grad]
    eps, lr, clip, noise_multiplier = 1e-3, 1e-6, 1.0, 1.0
    seed_box = [0]

    def infer():
        with torch.inference_mode():
            per_example_loss(model, batch).mean()

    def zo():
        seed_box[0] += 1
        seed = seed_box[0]
        with torch.no_grad():
            perturb(params, seed, eps)
            loss_plus = per_example_loss(model, batch)
            perturb(params, seed, -2 * eps)
            loss_minus = per_example_loss(model, batch)
            perturb(params, seed, eps)
            differences = ((loss_plus - loss_minus) / (2 * eps)).clamp(-clip, clip)
            projected = (differences.sum() + noise_multiplier * clip * torch.randn((), device=device)) / batch_size
            perturb(params, seed, -lr * float(projected))

    def one_pass():
        with torch.no_grad():
            perturb(params, 12345, eps)

    def bp_setup():
        for p in params:
            p.requires_grad_(True)
        return torch.optim.AdamW(params, lr=lr)

    optimizer_box = []

    def bp():
        if not optimizer_box:
            optimizer_box.append(bp_setup())
        optimizer = optimizer_box[0]
        optimizer.zero_grad(set_to_none=True)
        per_example_loss(model, batch).mean().backward()
        optimizer.step()

    names = [n for n, _ in model.named_parameters()]

    def psg(current):
        batch = batches[current]
        wrapper = _LabelWordModule(model)
        detached = {n: p.detach() for n, p in model.named_parameters()}

        def loss_one(weights, input_ids, attention_mask, position, label):
            # attention_mask=None: the batch has no padding, and HF's mask preparation calls
            # .item(), which vmap cannot batch (the 2026-11-30 H200 run failed on it).
            logits = torch.func.functional_call(
                wrapper,
                {f"m.{k}": v for k, v in weights.items()},
                (input_ids[None], None, position[None], batch[3]),
            )
            return F.cross_entropy(logits, label[None])

        grads = torch.func.vmap(torch.func.grad(loss_one), in_dims=(None, 0, 0, 0, 0))(
            detached, batch[0], batch[1], batch[2], batch[4]
        )
        norms = torch.sqrt(sum(g.float().pow(2).flatten(1).sum(1) for g in grads.values()))
        factor = (clip / (norms + 1e-6)).clamp(max=1.0)
        with torch.no_grad():
            for n in names:
                g = grads[n]
                summed = torch.einsum("b,b...->...", factor.to(g.dtype), g)
                noisy = summed + noise_multiplier * clip * torch.randn_like(summed)
                detached[n].add_(noisy / current, alpha=-lr)

    methods = [("infer", infer, batch_size), ("zo", zo, batch_size), ("perturb", one_pass, batch_size),
               ("backprop", bp, batch_size), ("dp-sgd", lambda: psg(batch_size), batch_size)]
    for extra in args.psg_batches:
        if extra != batch_size:
            batches[extra] = make_batch(model.config, extra, seq, device)
            methods.append(("dp-sgd", (lambda b: lambda: psg(b))(extra), extra))
    out_of_memory = False
    for method, step, size in methods:
        if args.methods and method not in args.methods:
            continue
        if method == "dp-sgd" and out_of_memory and size > batch_size:
            continue
        try:
            ms, peak, allocated, reserved = measure(step, args.warmup, args.repeats)
        except Exception as error:  # OOM or an op vmap cannot batch: record, keep going
            print(f"{name} {method} B={size}: {type(error).__name__}: {str(error)[:300]}", file=sys.stderr)
            out_of_memory = out_of_memory or isinstance(error, torch.OutOfMemoryError)
            ms, peak, allocated, reserved = math.nan, -1, -1, -1
            optimizer_box.clear()
        write(f"{name},{dtype_name(dtype)},{size},{seq},{method},pytorch-reference,{ms:.4f},{peak}")
        write_allocator(f"{name},{dtype_name(dtype)},{size},{seq},{method},{allocated},{reserved}")
        if method == "backprop":
            optimizer_box.clear()
            model.zero_grad(set_to_none=True)
            for p in params:
                p.requires_grad_(True)
        torch.cuda.empty_cache()
    del model
    torch.cuda.empty_cache()


class _LabelWordModule(torch.nn.Module):
    """Wraps a model so functional_call can run label_word_logits on substituted weights."""

    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, input_ids, attention_mask, positions, label_ids):
        return label_word_logits(self.m, input_ids, attention_mask, positions, label_ids)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="CSV file to append to")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="*", help="subset of: " + " ".join(s[0] for s in SETTINGS))
    parser.add_argument("--methods", nargs="*", help="subset of: infer zo perturb backprop dp-sgd")
    parser.add_argument("--psg-batches", type=lambda s: [int(x) for x in s.split(",") if x],
                        default=[1, 4], help="extra DP-SGD batch sizes, e.g. 1,4,32")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("reference_pytorch.py needs a CUDA device")
    torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    BASELINE[0] = device_used()
    new_file = not os.path.exists(args.out)
    allocator_path = args.out + ".allocator.csv"
    new_allocator = not os.path.exists(allocator_path)
    with open(args.out, "a") as out, open(allocator_path, "a") as allocator_out:
        if new_file:
            out.write("model,dtype,batch,seq,method,impl,ms_median,peak_bytes\n")
        if new_allocator:
            allocator_out.write("model,dtype,batch,seq,method,max_memory_allocated,max_memory_reserved\n")

        def write(line):
            print(line, flush=True)
            out.write(line + "\n")
            out.flush()

        def write_allocator(line):
            allocator_out.write(line + "\n")
            allocator_out.flush()

        for name, dtype, batch_size, seq in SETTINGS:
            if args.models and name not in args.models:
                continue
            run_setting(name, dtype, batch_size, seq, args, write, write_allocator)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.cuda.get_device_name()}", file=sys.stderr)


if __name__ == "__main__":
    main()
