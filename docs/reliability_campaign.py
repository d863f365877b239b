"""Fault campaign for issue 10: bad config, bad data, bad checkpoints, full/read-only disks, kill -9.

Every case runs the real entry points (``pipelines/*.py``) as a user would, on the smoke preset, in its own
copy of a prepared temp folder, and records the exit status, whether stderr holds exactly one ``error [...]``
line and no traceback, and a post-condition (previous results intact, no temp litter, resume worked).

    .venv/bin/python docs/reliability_campaign.py /tmp/campaign     # writes /tmp/campaign/results.json + table.md

Needs root for the tmpfs cases (full disk, read-only disk); they are skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
ENV = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


@dataclass
class Case:
    group: str
    name: str
    cmd: list[str]
    expect_ok: bool = False  # a recovery case: the stage must succeed
    setup: Callable[[Path], None] | None = None
    check: Callable[[Path, subprocess.CompletedProcess], str | None] | None = None  # None = fine, else a problem
    env: dict[str, str] = field(default_factory=dict)
    runner: Callable[["Case", Path], subprocess.CompletedProcess] | None = None


def sh(cmd: list[str], cwd: Path, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**ENV, **(env or {})}, timeout=timeout)


def params(d: Path) -> dict:
    return yaml.safe_load((d / "params.yaml").read_text())


def edit_params(d: Path, **changes) -> None:
    p = params(d)
    for key, value in changes.items():
        node = p
        *parents, last = key.split(".")
        for k in parents:
            node = node[k]
        node[last] = value
    (d / "params.yaml").write_text(yaml.safe_dump(p))


def stage(name: str, *extra: str) -> list[str]:
    return [PY, str(ROOT / "pipelines" / f"{name}.py"), "--params", "params.yaml", *extra]


def compose_cmd(*overrides: str) -> list[str]:
    return [PY, str(ROOT / "pipelines" / "compose.py"), "--check", "experiment=smoke", *overrides]


def make_base(base: Path) -> None:
    """Smoke params with every path inside ``base``, prepared data and a trained smoke classifier."""
    base.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "src"))
    from omegaconf import OmegaConf

    from repshare.config import compose_raw

    cfg = OmegaConf.to_container(compose_raw(["experiment=smoke"]), resolve=True)
    cfg["paths"] = {"data_dir": str(base / "data"), "results_dir": str(base / "results")}
    cfg["logger"]["dir"] = str(base / "results" / "wandb")
    (base / "params.yaml").write_text(yaml.safe_dump(cfg))
    for s in ("prepare", "train_classifier"):
        r = sh(stage(s), base)
        if r.returncode:
            raise SystemExit(f"baseline {s} failed:\n{r.stderr[-3000:]}")


def copy_base(base: Path, d: Path) -> None:
    shutil.copytree(base, d, symlinks=True)
    text = (d / "params.yaml").read_text().replace(str(base), str(d))
    (d / "params.yaml").write_text(text)


# --------------------------------------------------------------------------- checks
def no_litter(d: Path, _r=None) -> str | None:
    left = [p for p in d.rglob("*") if p.name.endswith((".tmp", ".old")) and p.name.startswith(".")]
    return f"temp litter: {[p.name for p in left]}" if left else None


def data_intact(d: Path, r=None) -> str | None:
    from repshare.data.shards import load_split

    try:
        load_split(d / "data" / "prepared", "val")
    except Exception as err:  # noqa: BLE001 - any failure is the finding
        return f"previous data lost: {err}"
    return no_litter(d)


def model_intact(d: Path, r=None) -> str | None:
    f = d / "results" / "models" / "classifier" / "model.safetensors"
    return None if f.is_file() and f.stat().st_size > 1000 else "previous classifier weights lost"


def both(*checks):
    def run(d, r):
        for c in checks:
            problem = c(d, r)
            if problem:
                return problem
        return None
    return run


def stderr_has(*words):
    def run(d, r):
        missing = [w for w in words if w not in r.stderr]
        return f"stderr lacks {missing}" if missing else None
    return run


# --------------------------------------------------------------------------- special runners
def kill_when(cmd: list[str], d: Path, ready: Callable[[], bool], sig=signal.SIGKILL, limit=600):
    # A background shell starts jobs with SIGINT ignored, and Python keeps an ignored SIGINT: restore it.
    proc = subprocess.Popen(cmd, cwd=d, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t0 = time.time()
    while proc.poll() is None and not ready() and time.time() - t0 < limit:
        time.sleep(0.05)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(sig)
    out, err = proc.communicate()
    return killed, subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def kill_prepare_then_rerun(case: Case, d: Path) -> subprocess.CompletedProcess:
    edit_params(d, **{"data.n_train": 3000})
    killed, _ = kill_when(stage("prepare"), d, lambda: any(
        p.name.startswith(".prepared.") and any(p.glob("*.npz")) for p in (d / "data").iterdir()))
    litter = [p.name for p in (d / "data").iterdir() if p.name.startswith(".prepared.")]
    from repshare.data.shards import load_split
    try:
        n_before = len(load_split(d / "data" / "prepared", "val"))
    except Exception as err:  # noqa: BLE001
        n_before = f"lost: {err}"
    r = sh(stage("prepare"), d)
    r.stdout = f"killed={killed} litter_after_kill={litter} previous_val_during_kill={n_before}"
    return r


def kill_train_then_resume(case: Case, d: Path) -> subprocess.CompletedProcess:
    edit_params(d, **{"train.classifier.epochs": 3})
    ckpt = d / "results" / "train_state" / "classifier" / "last.ckpt"
    shutil.rmtree(d / "results" / "train_state", ignore_errors=True)
    killed, _ = kill_when(stage("train_classifier"), d, ckpt.is_file)
    r = sh(stage("train_classifier"), d)
    # Same config uninterrupted, in a sibling copy, to compare weights.
    ref = d.parent / (d.name + "_ref")
    shutil.copytree(d, ref, ignore=shutil.ignore_patterns("train_state"))
    (ref / "params.yaml").write_text((d / "params.yaml").read_text().replace(str(d), str(ref)))
    sh(stage("train_classifier"), ref)
    from safetensors.torch import load_file

    a = load_file(str(d / "results" / "models" / "classifier" / "model.safetensors"))
    b = load_file(str(ref / "results" / "models" / "classifier" / "model.safetensors"))
    diff = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    r.stdout = f"killed={killed} resumed={'resuming' in r.stderr} max_weight_diff={diff:.2e}"
    shutil.rmtree(ref, ignore_errors=True)
    return r


def sigint_train(case: Case, d: Path) -> subprocess.CompletedProcess:
    edit_params(d, **{"train.classifier.epochs": 3})
    ckpt = d / "results" / "train_state" / "classifier" / "last.ckpt"
    shutil.rmtree(d / "results" / "train_state", ignore_errors=True)
    _, r = kill_when(stage("train_classifier"), d, ckpt.is_file, sig=signal.SIGINT)
    return r


def kill_detector_mid_epoch(case: Case, d: Path) -> subprocess.CompletedProcess:
    edit_params(d, **{"train.detector.checkpoint_every_n_steps": 2, "train.detector.epochs": 1})
    ckpt = d / "results" / "train_state" / "detector" / "last.ckpt"
    killed, _ = kill_when(stage("train_detector"), d, ckpt.is_file)
    r = sh(stage("train_detector"), d)
    r.stdout = f"killed={killed} resumed={'resum' in r.stderr}"
    return r


def tmpfs(d: Path, size: str, ro: bool = False) -> Path | None:
    mnt = d / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)]).returncode:
        return None
    if ro:
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
    return mnt


def full_disk_prepare(case: Case, d: Path) -> subprocess.CompletedProcess:
    mnt = tmpfs(d, "2m")
    if mnt is None:
        return subprocess.CompletedProcess([], -1, "skipped: no tmpfs", "")
    try:
        edit_params(d, **{"paths.data_dir": str(mnt), "data.n_train": 600})
        r = sh(stage("prepare"), d)
        r.stdout += f" litter={[p.name for p in mnt.iterdir()]}"
        return r
    finally:
        subprocess.run(["umount", str(mnt)])


def readonly_results(case: Case, d: Path) -> subprocess.CompletedProcess:
    mnt = tmpfs(d, "8m", ro=True)
    if mnt is None:
        return subprocess.CompletedProcess([], -1, "skipped: no tmpfs", "")
    try:
        edit_params(d, **{"paths.data_dir": str(mnt)})
        return sh(stage("prepare"), d)
    finally:
        subprocess.run(["umount", str(mnt)])


# --------------------------------------------------------------------------- the cases
def write(rel: str, data: bytes | str):
    def run(d: Path):
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return run


def truncate(rel: str, keep: int = 100):
    def run(d: Path):
        p = d / rel
        p.write_bytes(p.read_bytes()[:keep])
    return run


def flip(rel: str):
    def run(d: Path):
        p = d / rel
        b = bytearray(p.read_bytes())
        b[len(b) // 2] ^= 0xFF
        p.write_bytes(bytes(b))
    return run


def params_edit(**changes):
    return lambda d: edit_params(d, **changes)


def chain(*fns):
    def run(d):
        for f in fns:
            f(d)
    return run


def manifest_edit(fn):
    def run(d):
        p = d / "data" / "prepared" / "manifest.json"
        m = json.loads(p.read_text())
        p.write_text(json.dumps(fn(m)))
    return run


EVIL = b"cos\nsystem\n(S'touch PWNED'\ntR."
V = "data/prepared/val-00000.npz"

CASES: list[Case] = [
    # config, through compose.py (what `make run` / `dvc exp run` users hit first)
    Case("config", "misspelt key train.classifier.epoch=3", compose_cmd("train.classifier.epoch=3")),
    Case("config", "unknown group option data=foo", compose_cmd("data=foo")),
    Case("config", "unknown preset experiment=doesnotexist",
         [PY, str(ROOT / "pipelines" / "compose.py"), "--check", "experiment=doesnotexist"]),
    Case("config", "wrong type data.n_train=abc", compose_cmd("data.n_train=abc")),
    Case("config", "override without '=' (foo)", compose_cmd("foo")),
    Case("config", "train.classifier.lr=-1", compose_cmd("train.classifier.lr=-1")),
    Case("config", "train.classifier.limit_train_batches=0", compose_cmd("train.classifier.limit_train_batches=0")),
    Case("config", "train.detector.limit_train_batches=-3", compose_cmd("train.detector.limit_train_batches=-3")),
    Case("config", "train.classifier.num_workers=-1", compose_cmd("train.classifier.num_workers=-1")),
    Case("config", "sharing.n_eval=-5", compose_cmd("sharing.n_eval=-5")),
    Case("config", "sharing.n_eval=0", compose_cmd("sharing.n_eval=0")),
    Case("config", "model.classifier.num_classes=4 (< 8 data classes)", compose_cmd("model.classifier.num_classes=4")),
    Case("config", "data._target_=builtins.print", compose_cmd("data._target_=builtins.print")),
    Case("config", "data.difficulty=2", compose_cmd("data.difficulty=2")),
    Case("config", "model.detector.image_size=100", compose_cmd("model.detector.image_size=100")),
    Case("config", "logger.wandb_mode=sometimes", compose_cmd("logger.wandb_mode=sometimes")),
    Case("config", "data=imagenet without data.root",
         [PY, str(ROOT / "pipelines" / "compose.py"), "--check", "data=imagenet"]),
    # config, edited into params.yaml and run by a stage directly (`dvc repro` without make)
    Case("params", "YAML syntax error in params.yaml", stage("prepare"), setup=write("params.yaml", "seed: 0\ndata: {name: shapes\n")),
    Case("params", "params.yaml missing", stage("prepare"), setup=lambda d: (d / "params.yaml").unlink()),
    Case("params", "params.yaml empty", stage("prepare"), setup=write("params.yaml", "")),
    Case("params", "data.n_val=-3 in params.yaml", stage("prepare"), setup=params_edit(**{"data.n_val": -3}),
         check=data_intact),
    Case("params", "data._target_=builtins.print in params.yaml", stage("prepare"),
         setup=params_edit(**{"data._target_": "builtins.print"}), check=data_intact),
    Case("params", "limit_train_batches=-3 in params.yaml", stage("train_classifier"),
         setup=params_edit(**{"train.classifier.limit_train_batches": -3}), check=model_intact),
    Case("params", "num_classes=4 in params.yaml", stage("train_classifier"),
         setup=params_edit(**{"model.classifier.num_classes": 4}), check=model_intact),
    Case("params", "misspelt stage override data.n_trian=3", stage("prepare", "data.n_trian=3")),
    Case("params", "ImageNet root missing (Hydra InstantiationException)", stage("prepare"),
         setup=lambda d: _real(d, "imagenet")),
    Case("params", "COCO annotations missing (Hydra InstantiationException)", stage("prepare"),
         setup=lambda d: _real(d, "coco")),
    # data
    Case("data", "prepared/ missing", stage("train_classifier"), setup=lambda d: shutil.rmtree(d / "data" / "prepared")),
    Case("data", "manifest.json deleted", stage("train_classifier"),
         setup=lambda d: (d / "data" / "prepared" / "manifest.json").unlink()),
    Case("data", "manifest.json without splits", stage("train_classifier"),
         setup=manifest_edit(lambda m: {k: v for k, v in m.items() if k != "splits"})),
    Case("data", "manifest.json not JSON", stage("train_classifier"), setup=write("data/prepared/manifest.json", "{oops")),
    Case("data", "shard truncated", stage("train_classifier"), setup=truncate(V)),
    Case("data", "shard deleted", stage("train_classifier"), setup=lambda d: (d / V).unlink()),
    Case("data", "shard bit flip (checksum)", stage("train_classifier"), setup=flip(V)),
    Case("data", "paths.data_dir is a file", stage("prepare"),
         setup=chain(write("afile", "x"), lambda d: edit_params(d, **{"paths.data_dir": str(d / "afile")}))),
    # checkpoints
    Case("checkpoint", "checkpoint_path = text file", stage("train_classifier"),
         setup=chain(write("w.pth", "not weights\n"), lambda d: edit_params(d, **{"model.classifier.checkpoint_path": str(d / "w.pth")}))),
    Case("checkpoint", "checkpoint_path = malicious pickle", stage("train_classifier"),
         setup=chain(write("evil.pth", EVIL), lambda d: edit_params(d, **{"model.classifier.checkpoint_path": str(d / "evil.pth")})),
         check=lambda d, r: "code ran" if (d / "PWNED").exists() else None),
    Case("checkpoint", "checkpoint_path missing", stage("train_classifier"),
         setup=lambda d: edit_params(d, **{"model.classifier.checkpoint_path": str(d / "nope.safetensors")})),
    Case("checkpoint", "checkpoint_path = truncated safetensors", stage("train_classifier"),
         setup=chain(lambda d: shutil.copy(d / "results/models/classifier/model.safetensors", d / "t.safetensors"),
                     truncate("t.safetensors", 5000),
                     lambda d: edit_params(d, **{"model.classifier.checkpoint_path": str(d / "t.safetensors")}))),
    Case("checkpoint", "checkpoint_path = weights of another class count", stage("train_classifier"),
         setup=chain(lambda d: shutil.copy(d / "results/models/classifier/model.safetensors", d / "c.safetensors"),
                     lambda d: edit_params(d, **{"model.classifier.checkpoint_path": str(d / "c.safetensors"),
                                                 "model.classifier.num_classes": 10}))),
    Case("checkpoint", "trained classifier weights truncated (detector init)", stage("train_detector"),
         setup=truncate("results/models/classifier/model.safetensors", 5000)),
    Case("checkpoint", "truncated last.ckpt with matching fingerprint: warn, start over", stage("train_classifier"),
         expect_ok=True, setup=lambda d: _bad_last_ckpt(d), check=stderr_has("corrupt", "last.ckpt")),
    Case("checkpoint", "malicious last.ckpt with matching fingerprint: refused, start over", stage("train_classifier"),
         expect_ok=True, setup=lambda d: _bad_last_ckpt(d, EVIL),
         check=both(stderr_has("corrupt", "last.ckpt"), lambda d, r: "code ran" if (d / "PWNED").exists() else None)),
    # disk
    Case("disk", "full disk (2 MB tmpfs) during prepare", [], runner=full_disk_prepare, check=no_litter),
    Case("disk", "read-only data disk", [], runner=readonly_results),
    # kill -9 / interrupts
    Case("kill", "kill -9 during prepare, then rerun", [], expect_ok=True, runner=kill_prepare_then_rerun,
         check=both(data_intact, lambda d, r: None if "lost" not in r.stdout else r.stdout)),
    Case("kill", "kill -9 after epoch 1 of 3, then rerun (resume)", [], expect_ok=True, runner=kill_train_then_resume,
         check=lambda d, r: None if "resumed=True" in r.stdout and "diff=0.00e+00" in r.stdout else r.stdout),
    Case("kill", "kill -9 detector mid-epoch (every 2 steps), then rerun", [], expect_ok=True,
         runner=kill_detector_mid_epoch, check=lambda d, r: None if "resumed=True" in r.stdout else r.stdout),
    Case("kill", "Ctrl-C (SIGINT) during training", [], runner=sigint_train),
    Case("env", "WANDB_MODE=online exported: notice printed", stage("prepare"), expect_ok=True,
         env={"WANDB_MODE": "online"}, check=stderr_has("uploads to Weights & Biases")),
]


def _real(d: Path, which: str) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from omegaconf import OmegaConf

    from repshare.config import compose_raw

    over = ["experiment=real", f"data.root={d / 'no_imagenet'}"] if which == "imagenet" else \
        ["experiment=real", "data=coco", f"data.images_dir={d / 'no_coco'}", f"data.annotations={d / 'no_coco.json'}"]
    cfg = OmegaConf.to_container(compose_raw(over), resolve=True)
    cfg["paths"] = {"data_dir": str(d / "data"), "results_dir": str(d / "results")}
    (d / "params.yaml").write_text(yaml.safe_dump(cfg))


def _bad_last_ckpt(d: Path, payload: bytes | None = None) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from omegaconf import OmegaConf

    from repshare.config import validate_config
    from repshare.training.resume import fingerprint

    cfg = validate_config(OmegaConf.load(d / "params.yaml"))
    c, opt = cfg.model.classifier, cfg.train.classifier
    fp = fingerprint(cfg.seed, cfg.data, c, opt, cfg.trainer)
    s = d / "results" / "train_state" / "classifier"
    s.mkdir(parents=True, exist_ok=True)
    (s / "fingerprint.txt").write_text(fp + "\n")
    (s / "last.ckpt").write_bytes(payload or b"PK\x03\x04" + b"\0" * 50)


def classify(case: Case, r: subprocess.CompletedProcess, problem: str | None) -> dict:
    err_lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error [")]
    traceback = "Traceback" in r.stderr
    if r.returncode == -1:
        verdict = "skipped"
    elif case.expect_ok:
        verdict = "ok" if r.returncode == 0 and not problem else "FAIL"
    else:
        verdict = "ok" if r.returncode not in (0, None) and len(err_lines) == 1 and not traceback and not problem else "FAIL"
    shown = err_lines[0] if err_lines else (r.stderr.strip().splitlines() or [""])[-1]
    return {"group": case.group, "case": case.name, "rc": r.returncode, "one_line": len(err_lines) == 1 and not traceback,
            "message": shown[:240], "note": (problem or r.stdout.strip())[:240], "verdict": verdict}


def main(out: Path, only: str | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    base = out / "base"
    if not (base / "results" / "models" / "classifier" / "model.safetensors").is_file():
        shutil.rmtree(base, ignore_errors=True)
        make_base(base)
    rows = []
    for k, case in enumerate(CASES):
        if only and only not in case.name:
            continue
        d = out / f"case{k:02d}"
        shutil.rmtree(d, ignore_errors=True)
        copy_base(base, d)
        t0 = time.time()
        if case.setup:
            case.setup(d)
        r = case.runner(case, d) if case.runner else sh(case.cmd, d, case.env)
        problem = case.check(d, r) if case.check and r.returncode != -1 else None
        row = classify(case, r, problem)
        row["seconds"] = round(time.time() - t0, 1)
        rows.append(row)
        print(f"[{row['verdict']}] {case.group}: {case.name} rc={r.returncode} :: {row['message']} {row['note']}", flush=True)
        (out / "results.json").write_text(json.dumps(rows, indent=1))
        shutil.rmtree(d, ignore_errors=True)
    lines = ["| # | group | case | exit | one line | message / note | verdict |", "|---|---|---|---|---|---|---|"]
    for i, row in enumerate(rows, 1):
        msg = (row["message"] + (f" — {row['note']}" if row["note"] else "")).replace("|", "\\|")
        lines.append(f"| {i} | {row['group']} | {row['case']} | {row['rc']} | {'yes' if row['one_line'] else 'no'} | "
                     f"`{msg}` | {row['verdict']} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/repshare_campaign"), sys.argv[2] if len(sys.argv) > 2 else None)
