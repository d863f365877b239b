"""Benchmark of Gemel's pieces on the embedded workload's architectures (random init, no data):

(a) identical-layer discovery + heaviest-first grouping time (goal: < 1 s for 3 models)
(b) one joint-retraining SGD step of the three models vs the three separate steps it replaces
    (goal ratio <= 1.2: tying must not add work)
(c) merged workload file size vs the sum of the unmerged files when every identical layer is
    shared (goal: the difference equals the bytes the layers save, i.e. each shared tensor once)
(d) the time-sharing simulation of a 6-budget sweep (goal: < 1 s)
(e) what a decision costs: evaluating one image (classifier; detector forward + COCO matching), and the
    resampled mAP of ``--boot`` bootstrap resamples of ``--images`` detector images (synthetic matches)

Usage: python benchmarks/bench_gemel.py [--threads 1] [--batch 8] [--images 500] [--boot 1000]
                                        [--out results/benchmarks/gemel.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch


def build_workload() -> tuple[dict, dict]:
    from repshare.models.classifier import build_classifier
    from repshare.models.detector import build_detector
    from repshare.models.preprocess import Preprocess

    torch.manual_seed(0)
    models = {"classifier": build_classifier(num_classes=8), "detector": build_detector(num_classes=8, image_size=128),
              "classifier_color": build_classifier(num_classes=8)}
    pre = {"classifier": Preprocess(64), "detector": Preprocess(128), "classifier_color": Preprocess(64)}
    return models, pre


def batch_for(name: str, b: int, g: torch.Generator):
    x = torch.randint(0, 256, (b, 3, 64, 64), dtype=torch.uint8, generator=g)
    if name != "detector":
        return x, torch.randint(0, 8, (b,), generator=g)
    bbox = torch.tensor([[8.0, 8.0, 40.0, 40.0]]).expand(b, 1, 4).clone()
    return x, {"bbox": bbox, "cls": torch.zeros(b, 1, dtype=torch.long)}


def step_time(module, batches: dict, reps: int = 3) -> float:
    opt = module.configure_optimizers()
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        loss = sum(module.weights[n] * module.task_loss(n, b) for n, b in batches.items())
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    return sorted(times[1:])[len(times[1:]) // 2]


@torch.inference_mode()
def eval_cost(models: dict, pre: dict, n: int = 100) -> dict[str, float]:
    """CPU ms per image of the evaluations a decision runs (batch 50, the stage's default)."""
    from effdet import DetBenchPredict

    from repshare.gemel.coco_map import match
    from repshare.models.detector import detections_to_preds

    x = torch.randint(0, 256, (50, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    out = {}
    m = models["classifier"].eval()
    t0 = time.process_time()
    for _ in range(n // 50):
        m(pre["classifier"](x)).argmax(1)
    out["classifier"] = 1e3 * (time.process_time() - t0) / n
    bench = DetBenchPredict(models["detector"].eval())
    t0 = time.process_time()
    preds = []
    for _ in range(n // 50):
        preds += [{k: v.numpy() for k, v in p.items()} for p in detections_to_preds(bench(pre["detector"](x)))]
    out["detector_forward"] = 1e3 * (time.process_time() - t0) / n
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 60.0]]).numpy(), "labels": torch.tensor([0]).numpy()}] * n
    t0 = time.process_time()
    match(preds, targets)
    out["detector_matching"] = 1e3 * (time.process_time() - t0) / n
    return out


def bootstrap_cost(n: int, boot: int) -> float:
    """Seconds of the resampled mAP on ``boot`` resamples of ``n`` images with 100 detections each."""
    import numpy as np

    from repshare.gemel.coco_map import match, resampled_map
    from repshare.gemel.outcomes import counts_from_indices

    rng = np.random.default_rng(0)
    preds, targets = [], []
    for _ in range(n):
        g = int(rng.integers(1, 4))
        xy = rng.uniform(0, 100, (g, 2))
        gb = np.concatenate([xy, xy + rng.uniform(8, 40, (g, 2))], 1).astype(np.float32)
        gl = rng.integers(0, 8, g)
        db = np.concatenate([gb + rng.normal(0, 3, gb.shape), np.sort(rng.uniform(0, 128, (100 - g, 4)), 1)])
        preds.append({"boxes": db.astype(np.float32), "labels": np.concatenate([gl, rng.integers(0, 8, 100 - g)]),
                      "scores": np.concatenate([rng.uniform(0.3, 1, g), rng.uniform(0, 0.5, 100 - g)]).astype(np.float32)})
        targets.append({"boxes": gb, "labels": gl})
    m = match(preds, targets)
    t0 = time.process_time()
    resampled_map(m, counts_from_indices(rng.integers(0, n, (boot, n)), n))
    return time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--out", default="results/benchmarks/gemel.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from repshare.gemel import group_layers, identical_layers, shared_bytes, simulate, tie_layers
    from repshare.gemel.retrain import JointModule
    from repshare.gemel.simulate import SimModel
    from repshare.gemel.store import WEIGHTS, save_merged
    from repshare.gemel.timing import tensor_map

    models, pre = build_workload()
    t0 = time.perf_counter()
    inst = identical_layers(models)
    groups = group_layers(inst)
    t_discover = time.perf_counter() - t0
    saving = sum(i.saving for i in inst)

    g = torch.Generator().manual_seed(0)
    batches = {n: batch_for(n, args.batch, g) for n in models}
    tasks = {n: "detection" if n == "detector" else "classification" for n in models}
    for m in models.values():
        m.train()
    separate = sum(step_time(JointModule({n: models[n]}, {n: tasks[n]}, {n: pre[n]}, {n: 1.0}, 1e-3),
                             {n: batches[n]}) for n in models)
    tie_layers(models, inst, "first")
    joint = step_time(JointModule(models, tasks, pre, {n: 1.0 for n in models}, 1e-3), batches)

    total, distinct = shared_bytes(models)
    with tempfile.TemporaryDirectory() as d:
        save_merged(models, inst, d)
        file_bytes = (Path(d) / WEIGHTS).stat().st_size
    state_bytes = sum(t.numel() * t.element_size() for m in models.values() for t in m.state_dict().values())

    tmap = tensor_map(models)
    sims = [SimModel(n, tmap[n], 40.0, 20.0) for n in models]
    largest, whole = max(s.bytes for s in sims), sum(s.bytes for s in sims)
    t0 = time.perf_counter()
    for f in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        simulate(sims, int(largest + f * (whole - largest)), fps=30, sla_ms=100, duration_s=10, batch_size=4)
    t_sim = time.perf_counter() - t0

    per_image = eval_cost(models, pre)
    t_boot = bootstrap_cost(args.images, args.boot)

    rec = {
        "machine": f"{platform.machine()} {platform.processor()} threads={args.threads}",
        "layer_instances": len(inst), "groups": len(groups), "saving_bytes_all": saving,
        "discover_seconds": round(t_discover, 4), "goal_discover_s": 1.0,
        "step_separate_s": round(separate, 3), "step_joint_tied_s": round(joint, 3),
        "joint_over_separate": round(joint / separate, 3), "goal_joint_over_separate": 1.2,
        "param_bytes_per_model_sum": total, "param_bytes_distinct": distinct,
        "file_bytes": file_bytes, "state_bytes_unmerged": state_bytes,
        "file_saving_matches": abs((state_bytes - file_bytes) - saving) < 0.01 * saving,
        "simulate_sweep_seconds": round(t_sim, 3), "goal_simulate_s": 1.0,
        **{f"eval_ms_per_image_{k}": round(v, 2) for k, v in per_image.items()},
        f"resampled_map_seconds_{args.images}_images_{args.boot}_resamples": round(t_boot, 2),
    }
    for k, v in rec.items():
        print(f"{k}: {v}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rec, indent=2) + "\n")


if __name__ == "__main__":
    main()
