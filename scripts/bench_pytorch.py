"""The PyTorch peer for `facex bench`: the official FaceXFormer model code (the
`facexformer-pipeline` wheel) with torchvision's swin_b(weights=None), random weights, on the CPU.

  python scripts/bench_pytorch.py forward --batch 1 [--threads 2] [--iters 3]
  python scripts/bench_pytorch.py train   --batch 8
  python scripts/bench_pytorch.py forward --dtype bf16 --batch 8   (CPU, torch.autocast to bfloat16)
  python scripts/bench_pytorch.py forward --device cuda --dtype bf16 --batch 64   (PyTorch eager on a GPU)
  python scripts/bench_pytorch.py forward --batch 8 --profile   (also: per stage, per op kind)
  python scripts/bench_pytorch.py ort --batch 8   (ONNX Runtime on the official model exported by
                                                   torch.onnx.export, opset 17; needs onnxruntime)

Prints one line: mode, batch, median seconds, peak RSS (MiB). Run one mode per process so that
the peak memory belongs to that mode alone.
"""
import argparse, importlib.util, math, os, resource, sys, time

import torch
import torchvision


def load_official_model():
    spec = importlib.util.find_spec("facexformer_pipeline")
    if spec is None:
        sys.exit("install the official code: pip install --no-deps facexformer-pipeline")
    root = os.path.dirname(spec.origin)
    sys.path.insert(0, root)  # import network/ directly: the package __init__ pulls in facenet_pytorch
    import network.models.facexformer as fx

    fx.swin_b = lambda weights=None, **kw: torchvision.models.swin_b(weights=None)
    return fx.FaceXFormer()


def all_heads(model, x):
    """The official forward without its final per-task row selection (every head for every
    sample; the selection is indexing only, so the computation is the official one)."""
    import torch.nn as nn
    model.multi_scale_features.clear()
    model.backbone(x)
    feats = model.multi_scale_features
    n = feats[-1].shape[0]
    states = []
    for f, mlp in zip(feats, model.linear_c):
        h, w = f.shape[2], f.shape[3]
        f = mlp(f).permute(0, 2, 1).reshape(n, -1, h, w)
        states.append(nn.functional.interpolate(f, size=feats[0].size()[2:], mode="bilinear", align_corners=False))
    fused = model.linear_fuse(torch.cat(states[::-1], dim=1))
    pe = model.pe_layer((fused.shape[2], fused.shape[3])).unsqueeze(0).to(fused.dtype)
    return model.face_decoder(image_embeddings=fused, image_pe=pe)


def rotation(a):
    p, y, r = a[:, 0], a[:, 1], a[:, 2]
    o, z = torch.ones_like(p), torch.zeros_like(p)
    rx = torch.stack([o, z, z, z, p.cos(), -p.sin(), z, p.sin(), p.cos()], 1).view(-1, 3, 3)
    ry = torch.stack([y.cos(), z, y.sin(), z, o, z, -y.sin(), z, y.cos()], 1).view(-1, 3, 3)
    rz = torch.stack([r.cos(), -r.sin(), z, r.sin(), r.cos(), z, z, z, o], 1).view(-1, 3, 3)
    return rx @ ry @ rz


def total_loss(outs, n):
    """The gradient fixture's loss (fixtures README), on random targets (drawn on the CPU, then
    moved to the outputs' device)."""
    lm, pose, attr, vis, age, gender, race, seg = outs
    g = torch.Generator().manual_seed(0)
    dev = lm.device
    rand = lambda *shape: torch.rand(*shape, generator=g).to(dev)
    randn = lambda *shape: torch.randn(*shape, generator=g).to(dev)
    randint = lambda hi, shape: torch.randint(0, hi, shape, generator=g).to(dev)
    d = (lm.view(n, 68, 2) - (rand(n, 68, 2) * 2 - 1)).abs()
    w, eps = 10.0, 2.0
    wing = torch.where(d < w, w * torch.log1p(d / eps), d - (w - w * math.log1p(w / eps))).mean()
    tr = (rotation(pose.float()) * rotation(randn(n, 3) * 0.3)).sum((1, 2))
    geo = torch.acos(((tr - 1) / 2).clamp(-1 + 1e-6, 1 - 1e-6)).mean()
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    ce = torch.nn.functional.cross_entropy
    return (ce(seg, randint(11, (n, 224, 224))) + wing + geo
            + bce(attr, randint(2, (n, 40)).float())
            + bce(vis, randint(2, (n, 29)).float())
            + ce(age, randint(8, (n,))) + ce(gender, randint(2, (n,)))
            + ce(race, randint(5, (n,))))


# The stages of `facex bench --profile`, as module paths of the official model. Patch merging
# (backbone.0.{2,4,6}) counts with the stage it feeds, as in ours.
STAGES = [("patch_embed", ["backbone.0.0"]), ("stage1", ["backbone.0.1"]),
          ("stage2", ["backbone.0.2", "backbone.0.3"]), ("stage3", ["backbone.0.4", "backbone.0.5"]),
          ("stage4", ["backbone.0.6", "backbone.0.7"]), ("fusion", ["linear_c.0", "linear_c.1", "linear_c.2", "linear_c.3", "linear_fuse"]),
          ("decoder", ["face_decoder.transformer"]),
          ("heads", [f"face_decoder.{t}_prediction_head" for t in
                     ["landmarks", "pose", "attribute", "visibility", "age", "gender", "race"]]),
          ("upscaler", ["face_decoder.output_upscaling", "face_decoder.output_hypernetwork_mlps"])]

# torch.profiler op names -> the op kinds of `facex bench --profile`.
KINDS = [("gemm", ["addmm", "mm", "bmm", "matmul", "linear", "baddbmm"]), ("conv", ["conv", "convolution"]),
         ("softmax", ["softmax"]), ("layernorm", ["layer_norm"]), ("gelu", ["gelu"]),
         ("copy", ["copy_", "cat", "contiguous", "clone", "roll", "index", "gather", "pad", "permute"]),
         ("resample", ["upsample", "interpolate", "pool"]), ("optimizer", ["adamw", "_foreach", "lerp"]),
         ("reduce", ["sum", "mean", "max", "min"]),
         ("elementwise", ["add", "mul", "sub", "div", "exp", "log", "sqrt", "where", "neg", "tanh", "sigmoid",
                          "abs", "cos", "sin", "acos", "clamp", "fill_", "zero_"])]


def kind_of(name):
    n = name.lower()
    for kind, keys in KINDS:
        if any(k in n for k in keys):
            return kind
    return "other"


def profile_run(model, step, passes):
    """Per stage (wall time between forward hooks, summed over the stage's modules) and per op
    kind (torch.profiler's self CPU time of each aten op on the calling thread), per pass."""
    stage_of = {m: st for st, paths in STAGES for path in paths
                for name, m in model.named_modules() if name == path}
    stage_t, starts, hooks = {}, {}, []
    for m, st in stage_of.items():
        hooks.append(m.register_forward_pre_hook(lambda mod, inp: starts.__setitem__(mod, time.perf_counter())))
        hooks.append(m.register_forward_hook(
            lambda mod, inp, out, st=st: stage_t.__setitem__(st, stage_t.get(st, 0.0) + time.perf_counter() - starts[mod])))
    from torch.profiler import profile, ProfilerActivity
    t = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(passes):
            step()
    total = (time.perf_counter() - t) / passes
    for h in hooks:
        h.remove()
    print(f"pytorch profile: {total * 1e3:.1f} ms/pass (profiler on; forward-hook stages, backward not split)")
    print(f"{'stage':<16} {'ms/pass':>10} {'share':>7}")
    for st, _ in STAGES:
        if st in stage_t:
            print(f"{st:<16} {stage_t[st] / passes * 1e3:>10.1f} {100 * stage_t[st] / passes / total:>6.1f}%")
    kinds = {}
    for e in prof.key_averages():
        if e.key.startswith("aten::") or "optim" in e.key.lower():
            kinds[kind_of(e.key)] = kinds.get(kind_of(e.key), 0.0) + e.self_cpu_time_total / 1e6
    print(f"{'op kind':<12} {'ms/pass':>10} {'share':>7}")
    for kind, sec in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"{kind:<12} {sec / passes * 1e3:>10.1f} {100 * sec / passes / total:>6.1f}%")


class AllHeads(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return all_heads(self.model, x)


def ort_forward(args):
    """ONNX Runtime, the deployment peer: the official model exported with torch.onnx.export
    (opset 17, the batch size fixed), run with `threads` intra-op threads, full graph optimisation."""
    import tempfile
    import onnxruntime as ort
    torch.manual_seed(0)
    model = AllHeads(load_official_model().eval())
    n = args.batch
    x = torch.randn(n, 3, 224, 224)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "facexformer.onnx")
        with torch.no_grad():
            torch.onnx.export(model, (x,), path, opset_version=17, dynamo=False)
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x.numpy()}
        sess.run(None, feed)  # warm-up
        times = []
        for _ in range(args.iters):
            t = time.perf_counter()
            sess.run(None, feed)
            times.append(time.perf_counter() - t)
    times.sort()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"onnxruntime {ort.__version__} forward batch {n}: median {times[len(times) // 2]:.3f} s, "
          f"peak RSS {peak_mib:.0f} MiB (includes the export)")


def cuda_median_ms(run, iters, warmup=2):
    """The median of `iters` timed calls of `run()` after `warmup` untimed ones, in milliseconds,
    each between two CUDA events (the GPU's own clock, waited on before reading)."""
    times = []
    for i in range(warmup + iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        run()
        e.record()
        e.synchronize()
        if i >= warmup:
            times.append(s.elapsed_time(e))
    times.sort()
    return times[len(times) // 2]


def gpu_forward(args):
    """Inference on a GPU in eager mode: the official model code, random weights, model and input
    in the given dtype (bf16: `model.to(torch.bfloat16)`, as a user would), CUDA events around
    each pass. Prints milliseconds and images per second."""
    torch.manual_seed(0)
    dev = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    torch.backends.cuda.matmul.allow_tf32 = False  # f32 means f32, as in our f32 kernels
    torch.backends.cudnn.allow_tf32 = False
    model = load_official_model().eval().to(dev, dtype)
    model.pe_layer.float()  # the official PE layer works in f32 only; its output is cast
    n = args.batch
    x = torch.randn(n, 3, 224, 224, device=dev, dtype=dtype)
    tasks = torch.zeros(n, dtype=torch.long, device=dev)
    with torch.no_grad():
        ms = cuda_median_ms(lambda: all_heads(model, x), args.iters)
    print(f"pytorch forward {args.device} {args.dtype} batch {n}: median {ms:.2f} ms, {n / ms * 1e3:.1f} images/s")


def gpu_train(args):
    """One training step on a GPU (forward, the summed task losses, backward, AdamW), bf16
    autocast as a PyTorch user would train: the peer figure for what a real training run costs on
    such a device (facex trains on the CPU). Prints milliseconds per step and images per second."""
    torch.manual_seed(0)
    dev = torch.device(args.device)
    model = load_official_model().to(dev).train()
    for m in model.modules():
        if isinstance(m, torchvision.ops.StochasticDepth):
            m.p = 0.0
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5)
    n = args.batch
    x = torch.randn(n, 3, 224, 224, device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.dtype == "bf16"):
            loss = total_loss(all_heads(model, x), n)
        loss.backward()
        opt.step()

    ms = cuda_median_ms(step, args.iters)
    peak = torch.cuda.max_memory_allocated() / 2**20
    print(f"pytorch train {args.device} {args.dtype} autocast batch {n}: median {ms:.2f} ms, {n / ms * 1e3:.1f} images/s, "
          f"peak {peak:.0f} MiB")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["forward", "train", "ort"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--profile", action="store_true", help="also print per-stage and per-op-kind times")
    args = ap.parse_args()
    if args.device != "cpu":
        return gpu_train(args) if args.mode == "train" else gpu_forward(args)
    torch.set_num_threads(args.threads)
    if args.mode == "ort":
        return ort_forward(args)
    torch.manual_seed(0)
    model = load_official_model()
    n = args.batch
    x = torch.randn(n, 3, 224, 224)
    tasks = torch.zeros(n, dtype=torch.long)
    labels = {}
    times = []
    if args.mode == "forward":
        model.eval()
        # bf16: CPU autocast, as a user would (linear, matmul and conv in bf16, the rest in f32).
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.dtype == "bf16")
        with torch.no_grad(), autocast:
            model(x, labels, tasks)  # warm-up
            for _ in range(args.iters):
                t = time.perf_counter()
                model(x, labels, tasks)
                times.append(time.perf_counter() - t)
    else:
        model.train()
        # Stochastic depth off, as in the gradient fixture: the forward equals eval mode.
        for m in model.modules():
            if isinstance(m, torchvision.ops.StochasticDepth):
                m.p = 0.0
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5)
        for i in range(args.iters + 1):
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = total_loss(all_heads(model, x), n)
            loss.backward()
            opt.step()
            if i > 0:
                times.append(time.perf_counter() - t)
    times.sort()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    how = " (bf16 autocast)" if args.dtype == "bf16" else ""
    print(f"pytorch {args.mode} batch {n}{how}: median {times[len(times) // 2]:.3f} s, peak RSS {peak_mib:.0f} MiB")
    if args.profile:
        if args.mode == "forward":
            def step():
                with torch.no_grad():
                    all_heads(model, x)
        else:
            def step():
                opt.zero_grad(set_to_none=True)
                total_loss(all_heads(model, x), n).backward()
                opt.step()
        profile_run(model, step, args.iters)


if __name__ == "__main__":
    main()
