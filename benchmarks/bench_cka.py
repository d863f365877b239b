"""Benchmark of the streamed stage-wise CKA capture (random-init EfficientNet-B0 pair).

(a) capture + all-pairs CKA time vs the forward passes alone (goal <= 1.15x)
(b) vs the PyPI ``torch_cka`` package on the same models/data: values and speed (goal >= 20x)
(c) peak memory at n_small vs n_large examples, each in a fresh subprocess (goal ratio <= 1.2)

All ratios come from one run of this script. Usage:
    python benchmarks/bench_cka.py [--n 1000] [--size 64] [--threads 1] [--out results/benchmarks/cka.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch


def build_models(seed: int = 0):
    import timm

    torch.manual_seed(seed)
    cls = timm.create_model("efficientnet_b0", num_classes=8).eval()
    torch.manual_seed(seed + 1)
    bb = timm.create_model("efficientnet_b0", features_only=True, out_indices=(2, 3, 4)).eval()
    return cls, bb


def image_batches(n: int, batch: int, size: int, seed: int = 0):
    """Random uint8 images generated batch by batch (nothing of size n is ever held)."""
    g = torch.Generator().manual_seed(seed)
    for start in range(0, n, batch):
        b = min(batch, n - start)
        yield torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=g)


def time_forward(cls, bb, pre_c, pre_d, batches, device) -> float:
    from repshare.features.stages import run_stages

    t0, c0 = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for x in batches:
            x = x.to(device)
            run_stages(bb, pre_d(x))
            run_stages(cls, pre_c(x))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, time.process_time() - c0


def time_capture(cls, bb, pre_c, pre_d, batches, device):
    from repshare.features.capture import capture_cka

    t0, c0 = time.perf_counter(), time.process_time()
    res = capture_cka(cls, pre_c, bb, pre_d, batches, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, time.process_time() - c0, res


class Replay(torch.nn.Module):
    """Stage children s0..s{k-1} that return stored activations of batch ``idx``: torch_cka's hooks
    then see exactly our activations and its timing is its CKA work alone (no forward pass)."""

    def __init__(self, acts: list[list[torch.Tensor]]):
        super().__init__()
        self.k = len(acts)
        for k, per_batch in enumerate(acts):
            self.add_module(f"s{k}", _Lookup(per_batch))

    def forward(self, idx):
        for k in range(self.k):
            out = getattr(self, f"s{k}")(idx)
        return out


class _Lookup(torch.nn.Module):
    def __init__(self, per_batch):
        super().__init__()
        self.per_batch = per_batch

    def forward(self, idx):
        return self.per_batch[int(idx)]


def stage_acts(model, pre, batches, device) -> list[list[torch.Tensor]]:
    """Per stage, per batch activations (k lists of tensors)."""
    from repshare.features.stages import run_stages

    out: list[list[torch.Tensor]] = []
    with torch.inference_mode():
        for x in batches:
            st = run_stages(model, pre(x.to(device)))
            out = out or [[] for _ in st]
            for lst, o in zip(out, st):
                lst.append(o.clone())
    return out


def flop_counts(acts_d, acts_c) -> tuple[float, float]:
    """Multiply-add FLOPs per run of (ours, torch_cka) on these activations, gram and HSIC work only.

    Ours: one gram per representation per batch, then O(n^2) sums per pair. torch_cka: the x gram
    once per x, the y gram again for every (x, y) pair, and per HSIC call a full n x n matmul
    (``trace(K @ L)``), three calls per pair plus one per x. On a BLAS-bound CPU the speed-up cannot
    exceed the ratio of these counts by much.
    """
    ours = ref = 0.0
    for b in range(len(acts_d[0])):
        n = acts_d[0][b].shape[0]
        dx = [a[b][0].numel() for a in acts_d]
        dy = [a[b][0].numel() for a in acts_c]
        nx, ny = len(dx), len(dy)
        ours += 2 * n * n * (sum(dx) + sum(dy)) + 2 * n * n * nx * ny
        ref += 2 * n * n * (sum(dx) + nx * sum(dy)) + (nx + 2 * nx * ny) * 2 * n**3
    return ours, ref


def bench_cka_only(acts_d, acts_c, device):
    """Our MinibatchCKA vs torch_cka on the same stored activations: (ours_s, ours, ref_s, ref)."""
    import warnings

    from torch.utils.data import DataLoader, TensorDataset

    from repshare.cka import MinibatchCKA

    t0 = time.perf_counter()
    mb = MinibatchCKA(len(acts_d), len(acts_c))
    for b in range(len(acts_d[0])):
        mb.update([a[b] for a in acts_d], [a[b] for a in acts_c])
    ours = mb.compute().cpu().numpy()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t_ours = time.perf_counter() - t0
    import torch_cka.cka
    from torch_cka import CKA
    from tqdm import tqdm

    torch_cka.cka.tqdm = lambda *a, **k: tqdm(*a, **k, disable=True)  # its progress bar only adds noise

    m1, m2 = Replay(acts_d), Replay(acts_c)
    loader = DataLoader(TensorDataset(torch.arange(len(acts_d[0]))), batch_size=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = CKA(m1, m2, "detector", "classifier", [f"s{k}" for k in range(m1.k)],
                  [f"s{k}" for k in range(m2.k)], device=str(device))
        t0 = time.perf_counter()
        with torch.no_grad():
            ref.compare(loader, loader)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t_ref = time.perf_counter() - t0
    return t_ours, ours, t_ref, ref.export()["CKA"].double().numpy()


# ------------------------------------------------------------------------------ memory child
def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def memory_child(n: int, batch: int, size: int, threads: int, device: str) -> dict:
    torch.set_num_threads(threads)
    from repshare.features.capture import capture_cka
    from repshare.models.preprocess import Preprocess

    dev = torch.device(device)
    cls, bb = build_models()
    pre = Preprocess(size)
    # warm-up on one batch so allocator/JIT start-up is not counted
    capture_cka(cls, pre, bb, pre, image_batches(batch, batch, size, seed=99), device=dev)
    base = _rss_kib("VmRSS")
    try:  # reset the peak-RSS watermark (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        cuda_base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    res = capture_cka(cls, pre, bb, pre, image_batches(n, batch, size), device=dev)
    out = {
        "n": res.n,
        "seconds": time.perf_counter() - t0,
        "rss_base_mib": base / 1024,
        "peak_rss_mib": _rss_kib("VmHWM") / 1024,
        "peak_delta_mib": (_rss_kib("VmHWM") - base) / 1024,
    }
    if dev.type == "cuda":
        out["cuda_peak_delta_mib"] = (torch.cuda.max_memory_allocated() - cuda_base) / 2**20
    return out


def run_memory(n: int, args) -> dict:
    cmd = [sys.executable, __file__, "--_mem-child", str(n), "--batch", str(args.batch), "--mem-size",
           str(args.mem_size), "--threads", str(args.threads), "--device", args.device]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=600, help="examples for (a) and (b)")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--size", type=int, default=64, help="input resolution for (a) and (b)")
    p.add_argument("--repeats", type=int, default=3, help="timing repeats for (a); the fastest is kept")
    p.add_argument("--torch-cka-n", type=int, default=300, help="examples for the torch_cka comparison")
    p.add_argument("--mem-n", type=int, nargs=2, default=(2000, 8000))
    p.add_argument("--mem-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--out", default=None, help="write the JSON record here (e.g. results/benchmarks/cka.json)")
    p.add_argument("--_mem-child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args._mem_child is not None:
        print(json.dumps(memory_child(args._mem_child, args.batch, args.mem_size, args.threads, args.device)))
        return

    torch.set_num_threads(args.threads)
    from repshare.models.preprocess import Preprocess

    dev = torch.device(args.device)
    cls, bb = build_models()
    cls.to(dev)
    bb.to(dev)
    pre_c, pre_d = Preprocess(args.size).to(dev), Preprocess(args.size).to(dev)
    record: dict = {"config": vars(args) | {"_mem_child": None}, "machine": platform.platform(),
                    "torch": torch.__version__, "device": str(dev)}

    # (a) overhead over the forward passes
    batches = list(image_batches(args.n, args.batch, args.size))
    time_forward(cls, bb, pre_c, pre_d, batches[:1], dev)  # warm-up
    time_capture(cls, bb, pre_c, pre_d, batches[:1], dev)
    # Shared CPUs are noisy: time forward-only and capture back to back on each batch (paired),
    # keep each batch's fastest of ``repeats`` runs, and report both wall-clock and CPU time.
    inf = float("inf")
    best = {k: [inf] * len(batches) for k in ("fwd_wall", "fwd_cpu", "cap_wall", "cap_cpu")}
    for _ in range(args.repeats):
        for i, x in enumerate(batches):
            w, c = time_forward(cls, bb, pre_c, pre_d, [x], dev)
            best["fwd_wall"][i], best["fwd_cpu"][i] = min(best["fwd_wall"][i], w), min(best["fwd_cpu"][i], c)
            w, c, _ = time_capture(cls, bb, pre_c, pre_d, [x], dev)
            best["cap_wall"][i], best["cap_cpu"][i] = min(best["cap_wall"][i], w), min(best["cap_cpu"][i], c)
    tot = {k: sum(v) for k, v in best.items()}
    t_fwd = tot["fwd_wall"]
    record["a"] = {"n": args.n, "forward_s": t_fwd, "capture_cka_s": tot["cap_wall"],
                   "ratio": tot["cap_wall"] / t_fwd, "forward_cpu_s": tot["fwd_cpu"],
                   "capture_cka_cpu_s": tot["cap_cpu"], "ratio_cpu": tot["cap_cpu"] / tot["fwd_cpu"],
                   "goal": "<= 1.15"}

    # (b) torch_cka on the same stored activations (CKA work only, all 8x8 stage pairs)
    try:
        sub = batches[: max(1, args.torch_cka_n // args.batch)]
        acts_d = stage_acts(bb, pre_d, sub, dev)
        acts_c = stage_acts(cls, pre_c, sub, dev)
        t_ours, ours, t_ref, ref = bench_cka_only(acts_d, acts_c, dev)
        diff = float(abs(ours - ref).max())
        f_ours, f_ref = flop_counts(acts_d, acts_c)
        record["b"] = {
            "n": sum(len(x) for x in sub), "pairs": int(ref.size), "max_abs_diff": diff,
            "values_agree_1e-4": diff < 1e-4, "ours_cka_s": t_ours, "torch_cka_s": t_ref,
            "speedup": t_ref / t_ours, "goal": ">= 20",
            "flops_ours": f_ours, "flops_torch_cka": f_ref, "flop_ratio": f_ref / f_ours,
            "gflops_per_s_ours": f_ours / t_ours / 1e9, "gflops_per_s_torch_cka": f_ref / t_ref / 1e9,
        }
        record["a"]["cka_only_s_per_example"] = t_ours / record["b"]["n"]
        record["a"]["ratio_from_parts"] = (t_fwd + t_ours / record["b"]["n"] * args.n) / t_fwd
    except ImportError as err:
        record["b"] = {"skipped": str(err)}

    # (c) peak memory at two dataset sizes, fresh processes
    if not args.skip_memory:
        small, large = (run_memory(n, args) for n in args.mem_n)
        record["c"] = {"small": small, "large": large,
                       "peak_ratio": large["peak_rss_mib"] / small["peak_rss_mib"],
                       "peak_delta_ratio": large["peak_delta_mib"] / max(small["peak_delta_mib"], 1e-9),
                       "goal": "<= 1.2"}

    a = record["a"]
    print(f"\nCKA benchmark ({dev}, {args.threads} thread(s), efficientnet_b0 random init)")
    print(f"{'measure':<44}{'value':>12}  goal")
    print(f"{'(a) forward only, n=%d @%dpx [s]' % (args.n, args.size):<44}{a['forward_s']:>12.2f}")
    print(f"{'(a) capture + 8x8 CKA [s]':<44}{a['capture_cka_s']:>12.2f}")
    print(f"{'(a) ratio (wall clock)':<44}{a['ratio']:>12.3f}  <= 1.15")
    print(f"{'(a) ratio (process CPU time)':<44}{a['ratio_cpu']:>12.3f}  <= 1.15")
    b = record["b"]
    if "skipped" not in b:
        print(f"{'(b) torch_cka max |diff| (%d pairs)' % b['pairs']:<44}{b['max_abs_diff']:>12.2e}  < 1e-4")
        print(f"{'(b) CKA only, n=%d: ours / torch_cka [s]' % b['n']:<44}{b['ours_cka_s']:>6.2f} / {b['torch_cka_s']:<6.2f}")
        print(f"{'(b) speed-up over torch_cka':<44}{b['speedup']:>12.1f}  >= 20")
        print(f"{'(b) FLOP ratio torch_cka / ours (the bound)':<44}{b['flop_ratio']:>12.1f}")
        print(f"{'(b) GFLOP/s ours / torch_cka':<44}{b['gflops_per_s_ours']:>6.1f} / {b['gflops_per_s_torch_cka']:<6.1f}")
        print(f"{'(a) ratio from parts (fwd + CKA-only)/fwd':<44}{a['ratio_from_parts']:>12.3f}  <= 1.15")
    if "c" in record:
        c = record["c"]
        for key in ("small", "large"):
            r = c[key]
            print(f"{'(c) n=%d @%dpx peak RSS / delta [MiB]' % (r['n'], args.mem_size):<44}"
                  f"{r['peak_rss_mib']:>6.0f} / {r['peak_delta_mib']:<5.0f}")
        print(f"{'(c) peak RSS ratio large/small':<44}{c['peak_ratio']:>12.3f}  <= 1.2")
        print(f"{'(c) peak delta ratio large/small':<44}{c['peak_delta_ratio']:>12.3f}")
    if args.out:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        from repshare.utils.io import write_json

        write_json(args.out, record)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
