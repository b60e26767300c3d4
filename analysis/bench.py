"""`python -m analysis.bench [--quick] [--json] [--out DIR] [--models-dir DIR] [--teacher NAME] [--threads N] [--app]`

Speed and quality of every model side by side, in one process and one run: the CFG teacher at 64/32/16/8/4 DDIM
steps and every student at its own step count — latency, throughput, NFE, parameters, FLOPs, peak memory, the
sampler's overhead over the bare network, Fréchet distance and accuracy — plus the bf16 / channels_last /
torch.compile variants of the teacher's forward and, with `--app`, the app's cold start and `/compare` latency.
Writes `bench.json`, `bench.md` and a Pareto chart (`pareto.html`) to `--out`; with `--json` the last line printed
is a JSON list with one object per (model, steps) row.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from demo.core.paths import BENCH_DIR, MODELS_DIR, REPO_ROOT

REPO = REPO_ROOT
DEFAULT_MODELS = MODELS_DIR
DEFAULT_OUT = BENCH_DIR
DEFAULT_TEACHER = "fmnist-teacher"
TEACHER_STEPS = (64, 32, 16, 8, 4)
PLAIN_STUDENT_STEPS = 64  # a DASH-style student (fewer parameters, same sampler) with no step count samples like the teacher
GUIDANCE = 2.0  # diffusers' W (demo.core.guidance): 2 NFE per step through CFG, 1 for a w-conditioned student
SAMPLER = "ddim"
BATCH = 16  # the throughput batch (latency_ms_b16, img_per_s, overhead)
PROBE_T = 500  # the timestep of the raw-forward timings; a UNet's cost does not depend on it
OVERHEAD_GOAL = 1.10
ROW_KEYS = ("model", "steps", "nfe", "latency_ms_b1", "img_per_s", "params", "overhead")


def say(*args) -> None:
    """Progress goes to stderr, so that stdout ends with the results (and, with --json, the JSON line)."""
    print(*args, file=sys.stderr, flush=True)


# ---- which models, at which step counts ----
@dataclass(frozen=True)
class Target:
    name: str
    folder: Path
    kind: str
    method: str
    steps: int
    w_conditioned: bool
    teacher: str | None
    note: str = ""


def model_entries(models_dir: Path) -> list:
    """The model folders directly under `models_dir`, described from their cards (no weights read)."""
    from demo.core.card import Entry, read_card
    from demo.core.layout import is_model_folder

    rows = []
    for folder in sorted(p for p in Path(models_dir).iterdir() if p.is_dir() and is_model_folder(p)):
        card = read_card(folder)
        name = card.get("name") if isinstance(card.get("name"), str) and card.get("name") else folder.name
        rows.append(Entry.of(name, folder, card))
    return rows


def find_targets(models_dir: Path, teacher: str | None = None) -> list[Target]:
    """The (model, steps) rows: the chosen teacher(s) at TEACHER_STEPS, then every student at its step count."""
    entries = model_entries(models_dir)
    teachers = [e for e in entries if e.kind == "teacher"]
    if teacher is not None:
        teachers = [e for e in teachers if teacher in (e.name, e.path.name)]
        if not teachers:
            raise ValueError(f"--teacher {teacher!r} names no teacher model folder under {models_dir}.")
    elif any(e.path.name == DEFAULT_TEACHER for e in teachers):
        teachers = [e for e in teachers if e.path.name == DEFAULT_TEACHER]
    if not teachers:
        raise ValueError(f"There is no teacher model folder (card kind 'teacher') under {models_dir}.")
    rows = [Target(e.name, e.path, "teacher", e.method, s, False, None) for e in teachers for s in TEACHER_STEPS]
    for e in entries:
        if e.kind != "student":
            continue
        steps, note = e.steps, ""
        if not steps:
            steps = PLAIN_STUDENT_STEPS
            note = f"no distilled step count: sampled at {steps} steps" + (
                "" if e.w_conditioned else " with CFG like the teacher"
            )
        rows.append(Target(e.name, e.path, "student", e.method, int(steps), e.w_conditioned, e.card.get("teacher"), note))
    return rows


# ---- timing ----
def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_alternating(fns: dict, device, quick: bool, budget_s: float, max_rounds: int = 30) -> dict:
    """Median seconds of each function, run in round-robin after one warm-up each, so that all of them see the same
    machine load (a ratio between two of them is then fair even when other processes come and go)."""
    warm = 0.0
    for fn in fns.values():
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        warm += time.perf_counter() - t0
    rounds = max(2 if quick else 5, min(max_rounds, int(budget_s / max(warm, 1e-6))))
    times: dict = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def raw_forward(model, B: int, guidance: float, seed: int = 0):
    """(fn, NFE per call): the bare network on exactly the batch the denoiser sends per sampler step.

    CFG runs one forward on the concatenated [2B] batch (conditional + null labels), which counts as 2 NFE of B, so
    a sampler that added nothing to the network's own time would have overhead 1.0.
    """
    import torch

    from demo.core.generate import parse_labels
    from demo.core.samplers import initial_noise

    card = model.card
    z = initial_noise(seed, B, (card.channels, card.image_size, card.image_size), model.device)
    y = parse_labels("all", B, card.num_classes).to(model.device)
    null = torch.full_like(y, model.null_class)
    if card.w_conditioned:
        args, nfe = (z, y, torch.full((B,), float(guidance), device=model.device)), 1
    elif guidance in (0.0, 1.0):
        args, nfe = (z, y if guidance == 1.0 else null, None), 1
    else:
        args, nfe = (torch.cat([z, z]), torch.cat([y, null]), None), 2  # [2B, C, H, W]
    t = torch.full((args[0].shape[0],), PROBE_T, dtype=torch.long, device=model.device)

    @torch.no_grad()
    def fn():
        return model.output(args[0], t, args[1], args[2])

    return fn, nfe


def flops_per_nfe(model, guidance: float) -> int:
    """FLOPs of one network evaluation for one image (torch.utils.flop_counter; 2 FLOPs per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    fn, nfe = raw_forward(model, 1, guidance)
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops() // nfe)


# ---- peak memory: what is measured is in the key name ----
def _proc_status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


@contextlib.contextmanager
def peak_memory(device, out: dict):
    """Fill `out` with the peak memory of the block.

    CUDA: `peak_cuda_alloc_mb` (torch.cuda.max_memory_allocated). CPU on Linux: the resident-set high-water mark
    is reset through /proc/self/clear_refs, so `peak_rss_mb` is the process's peak RSS during the block and
    `peak_rss_delta_mb` its rise over the RSS before it (freed memory that the allocator keeps is not counted
    again). Elsewhere: `peak_rss_since_start_mb` from getrusage, which never resets.
    """
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        yield
        out["peak_cuda_alloc_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["peak_cuda_alloc_delta_mb"] = round((torch.cuda.max_memory_allocated() - before) / 2**20, 1)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS to the current RSS (Linux ≥ 4.0)
        before = _proc_status_kb("VmRSS")
    except OSError:
        before = None
    yield
    peak = _proc_status_kb("VmHWM") if before is not None else None
    if peak is not None:
        out["peak_rss_mb"] = round(peak / 1024, 1)
        out["peak_rss_delta_mb"] = round(max(0, peak - before) / 1024, 1)
    else:
        import resource

        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        out["peak_rss_since_start_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, 1)


# ---- one row ----
def time_sampler(run, fwd, nfe_per_call: int, device, quick: bool) -> dict:
    """Median sampler time, bare-network time per NFE and overhead, measured in alternation.

    Each repeat times one sampler run, then (right after, so both see the same machine load) a few bare forwards
    of the same batch; `overhead` is the median of the per-repeat ratios sampler / (NFE × forward per NFE).
    """
    _sync(device)
    t0 = time.perf_counter()
    nfe = run()  # warm-up: returns the NFE per image the denoiser counted
    fwd()
    _sync(device)
    warm = time.perf_counter() - t0
    calls = max(1, nfe // nfe_per_call)  # network calls per sampler run (the CFG call is one [2B] forward)
    k = min(calls, 2 if quick else 8)
    lo, hi, budget = (1, 2, 1.0) if quick else (3, 7, 15.0)
    sampler_s, forward_s, ratios = [], [], []
    for _ in range(max(lo, min(hi, int(budget / max(warm, 1e-6))))):
        t0 = time.perf_counter()
        run()
        _sync(device)
        s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(k):
            fwd()
        _sync(device)
        f = (time.perf_counter() - t0) / k / nfe_per_call  # seconds per NFE
        sampler_s.append(s)
        forward_s.append(f)
        ratios.append(s / (nfe * f))
    return {
        "nfe": nfe,
        "sampler_s": statistics.median(sampler_s),
        "forward_s": statistics.median(forward_s),
        "overhead": statistics.median(ratios),
    }


def measure_row(model, target: Target, quick: bool, guidance: float = GUIDANCE, seed: int = 0) -> dict:
    """Latency at batch 1 and 16, throughput, NFE, FLOPs, peak memory and the sampler's overhead for one (model, steps)."""
    from demo.core.generate import generate
    from demo.core.models import count_parameters

    dev = model.device
    row = {
        "model": target.name,
        "kind": target.kind,
        "method": target.method,
        "steps": target.steps,
        "w_conditioned": target.w_conditioned,
        "sampler": SAMPLER,
        "guidance": guidance,
    }
    for B in (1, BATCH):

        def run(B=B):
            return generate(model, B, "all", target.steps, guidance, SAMPLER, seed, batch_size=B).nfe

        fwd, nfe_per_call = raw_forward(model, B, guidance, seed)
        mem: dict = {}
        with peak_memory(dev, mem) if B == BATCH else contextlib.nullcontext():
            t = time_sampler(run, fwd, nfe_per_call, dev, quick)
        row.update(mem)
        row[f"latency_ms_b{B}"] = round(t["sampler_s"] * 1000, 3)
        row[f"forward_ms_per_nfe_b{B}"] = round(t["forward_s"] * 1000, 4)
        row["overhead" if B == BATCH else "overhead_b1"] = round(t["overhead"], 3)
        row["nfe"] = t["nfe"]
    row["img_per_s"] = round(BATCH / (row[f"latency_ms_b{BATCH}"] / 1000), 2)
    row["params"] = count_parameters(model.net)
    row["flops_per_nfe"] = flops_per_nfe(model, guidance)
    row["gflops_per_image"] = round(row["flops_per_nfe"] * row["nfe"] / 1e9, 4)
    if target.note:
        row["note"] = target.note
    return row


def quality(
    folder: Path,
    model,
    steps: int,
    n: int,
    classifier,
    reference,
    cache: Path,
    bf16: bool,
    guidance: float = GUIDANCE,
    seed: int = 0,
) -> dict:
    """Fréchet distance and accuracy of n samples, from the feature cache shared with the reports (`analysis.protocol`)
    when it holds them; `cache` None: its default folder."""
    from analysis.evaluate import evaluate_seeds

    m, _ = evaluate_seeds(
        folder, model, [seed], n, steps, guidance, SAMPLER, "all", 250, classifier, reference, bf16=bf16, cache_dir=cache
    )
    return {"frechet_distance": round(m["frechet_distance"], 4), "accuracy": round(m["accuracy"], 4), "quality_n": n}


# ---- variants of the teacher's forward: bf16 autocast, channels_last, torch.compile ----
def variant_rows(model, quick: bool, threads: int, compile_timeout: float) -> list[dict]:
    """Each variant's forward time on the teacher's CFG batch and its speed ratio against fp32 eager (> 1 is faster)."""
    import torch

    fwd, _ = raw_forward(model, BATCH, GUIDANCE)
    dev = model.device
    ref = fwd().float()
    channels_last = copy.copy(model)
    channels_last.net = copy.deepcopy(model.net).to(memory_format=torch.channels_last)
    fwd_cl, _ = raw_forward(channels_last, BATCH, GUIDANCE)

    def autocast(fn):
        def run():
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                return fn()

        return run

    batch = 2 * BATCH if not model.card.w_conditioned else BATCH
    fns = {
        "fp32 eager": fwd,
        "bf16 autocast": autocast(fwd),
        "channels_last": fwd_cl,
        "bf16 autocast + channels_last": autocast(fwd_cl),
    }
    rows, ok = [], {}
    for name, fn in fns.items():
        row = {"variant": name, "model": model.name, "batch": batch}
        try:  # an unsupported dtype or layout on this machine is a result, not a crash
            row["max_abs_diff"] = round((fn().float() - ref).abs().max().item(), 5)
            ok[name] = fn
        except Exception as e:
            row["status"] = f"failed: {type(e).__name__}: {e}"[:300]
        rows.append(row)
    times = time_alternating(ok, dev, quick, budget_s=2.0 if quick else 20.0)
    for row in rows:
        if row["variant"] in times:
            s = times[row["variant"]]
            row.update(forward_ms=round(s * 1000, 3), speedup=round(times["fp32 eager"] / s, 3), status="ok")
    row = {"variant": "torch.compile", "model": model.name, "batch": batch}
    if quick:
        row["status"] = "skipped (--quick)"
    else:
        row.update(compile_in_subprocess(model.path, str(dev), threads, compile_timeout))
    rows.append(row)
    return rows


def compile_in_subprocess(folder: Path, device: str, threads: int, timeout: float) -> dict:
    """torch.compile in a child process, so that a slow compile can be cut off at `timeout` seconds and a crash stays there."""
    cmd = [sys.executable, "-m", "analysis.bench", "--compile-probe", str(folder), "--device", device, "--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TORCHINDUCTOR_COMPILE_THREADS": "1"}
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(proc)
            return {"status": f"timed out after {timeout:.0f} s (compile not finished)"}
        err.seek(0)
        tail = [line for line in err.read().splitlines() if line.strip()][-1:] or ["no output"]
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"status": f"failed: {tail[0][:300]}"}
    res = json.loads(lines[-1])
    res["status"] = "ok" if "speedup" in res else res.get("status", "failed")
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    return res


def compile_probe(folder: str, device: str) -> dict:
    """Run in the child: eager and compiled forward times on the teacher's CFG batch (same process, same conditions)."""
    import torch

    from demo.core.models import load_model_folder

    model = load_model_folder(folder, device=device)
    eager, _ = raw_forward(model, BATCH, GUIDANCE)
    ref = eager().float()
    compiled_model = copy.copy(model)
    compiled_model.net = torch.compile(model.net)
    compiled, _ = raw_forward(compiled_model, BATCH, GUIDANCE)
    t0 = time.perf_counter()
    out = compiled().float()  # the first call compiles
    _sync(model.device)
    compile_s = time.perf_counter() - t0
    t = time_alternating({"eager": eager, "compiled": compiled}, model.device, False, budget_s=10.0)
    return {
        "forward_ms": round(t["compiled"] * 1000, 3),
        "eager_ms": round(t["eager"] * 1000, 3),
        "speedup": round(t["eager"] / t["compiled"], 3),
        "compile_s": round(compile_s, 1),
        "max_abs_diff": round((out - ref).abs().max().item(), 5),
    }


# ---- the app: cold start and /compare through gradio_client ----
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """End a child started in its own session, with whatever it spawned (its process group)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def showcase_student(targets: list[Target], teacher: Target) -> Target | None:
    """The student the app's /compare is timed with: the teacher's fastest w-conditioned student, preferring one
    distilled from it (a student of another teacher only when it has none)."""
    own = (teacher.name, teacher.folder.name)
    students = sorted(
        (t for t in targets if t.kind == "student"), key=lambda t: (t.teacher not in own, not t.w_conditioned, t.steps)
    )
    return students[0] if students else None


def app_bench(
    models_dir: Path, teacher: Target, student: Target | None, threads: int, device: str, quick: bool, timeout: float = 120.0
) -> dict:
    """Seconds from `python app.py` to the first HTTP 200 on /, then /compare latency (first call loads the models), then
    the default Guidance-branches and Embedding runs (`_default_analysis_seconds`)."""
    port = _free_port()
    env = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GDL_MODEL_ROOTS": str(models_dir),
        "GDL_DEVICE": device,
        "OMP_NUM_THREADS": str(threads),
    }
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryFile("w+") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "app.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            cold = None
            while time.perf_counter() - t0 < timeout and proc.poll() is None:
                try:
                    with urllib.request.urlopen(url, timeout=2) as r:
                        if r.status == 200:
                            cold = time.perf_counter() - t0
                            break
                except OSError:
                    time.sleep(0.1)
            if cold is None:
                log.seek(0)
                tail = [line for line in log.read().splitlines() if line.strip()][-1:] or ["no output"]
                why = (
                    f"exited with code {proc.returncode}" if proc.poll() is not None else f"did not answer within {timeout:.0f} s"
                )
                return {"status": f"skipped: the app {why} ({tail[0][:200]})"}
            res = {"status": "ok", "cold_start_s": round(cold, 2)}
            try:
                from gradio_client import Client

                client = Client(url, verbose=False)
            except Exception as e:  # noqa: BLE001 (the cold start is measured; say why the API could not be reached)
                res["status"] = f"cold start measured; the API did not answer ({type(e).__name__}: {str(e)[:200]})"
                return res
            res.update(_compare_latency(client, teacher, student, quick))
            res.update(_default_analysis_seconds(client))
            return res
        finally:
            _stop(proc)


def _compare_latency(client, teacher: Target, student: Target | None, quick: bool) -> dict:
    """/compare at batch 1 through `client` (a gradio_client `Client` of the served app): the first call (which also loads
    both models) and the median of the warm ones."""
    try:
        s_folder, s_steps = (student.folder, student.steps) if student else (teacher.folder, 4)
        kwargs = {
            "teacher": str(teacher.folder),
            "student": str(s_folder),
            "class_label": "0",
            "guidance": GUIDANCE,
            "teacher_steps": TEACHER_STEPS[0],
            "student_steps": s_steps,
            "seed": 0,
        }
        times = []
        for _ in range(2 if quick else 4):  # the first call also loads both models
            t0 = time.perf_counter()
            client.predict(**kwargs, api_name="/compare")
            times.append(time.perf_counter() - t0)
        return {
            "compare_first_ms": round(times[0] * 1000, 1),
            "compare_ms": round(statistics.median(times[1:]) * 1000, 1),
            "compare": f"{teacher.name} at {TEACHER_STEPS[0]} steps vs {student.name if student else teacher.name} at {s_steps} steps, batch 1",
        }
    except Exception as e:  # the server answered but the API did not: report it, keep the numbers we have
        return {"status": f"cold start measured; /compare failed ({type(e).__name__}: {str(e)[:200]})"}


def _default_analysis_seconds(client) -> dict:
    """Seconds for one Guidance-branches run and one Embedding run with the inputs the page opens with (gradio_client
    fills every input from its component's default), on the server `app_bench` just started: what a first visitor who
    presses Run waits, model loading included."""
    out = {}
    try:
        for api in ("branch_gap", "embedding"):
            t0 = time.perf_counter()
            client.predict(api_name=f"/{api}")
            out[f"{api}_default_s"] = round(time.perf_counter() - t0, 1)
    except Exception as e:  # noqa: BLE001 (the numbers measured so far are kept, the failure is said)
        out["analysis_status"] = f"default analysis runs failed ({type(e).__name__}: {str(e)[:200]})"
    return out


# ---- machine, markdown, figure ----
def load_average() -> float | None:
    """The 1-minute load average: above the core count, other processes were competing for the CPU."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def machine_info(threads: int, device: str, quick: bool) -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "device": device,
        "quick": quick,
        "guidance": GUIDANCE,
        "sampler": SAMPLER,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def to_markdown(report: dict) -> str:
    from analysis.evaluate import format_value, markdown_table

    m, rows = report["machine"], report["rows"]
    mem = next(
        (k for k in ("peak_rss_delta_mb", "peak_cuda_alloc_delta_mb", "peak_rss_since_start_mb") if rows and k in rows[0]), None
    )
    cols = [
        "model",
        "steps",
        "nfe",
        "latency_ms_b1",
        "latency_ms_b16",
        "img_per_s",
        "speedup_vs_teacher_64",
        "overhead",
        "overhead_b1",
        "params",
        "gflops_per_image",
        mem,
    ]
    cols += ["frechet_distance", "accuracy"] if any(r.get("frechet_distance") is not None for r in rows) else []
    out = [
        "# Benchmark",
        "",
        f"{m['date']} · torch {m['torch']} · {m['cpu']} ({m['cpu_count']} cores) · {m['threads']} thread(s) · {m['device']}"
        + (f" ({m['gpu']})" if "gpu" in m else "")
        + (" · --quick" if m["quick"] else "")
        + (f" · load average {m['load_avg_start']:g} → {m['load_avg_end']:g}" if m.get("load_avg_start") is not None else ""),
        "",
        f"DDIM at guidance W = {m['guidance']:g} (diffusers convention): the CFG teacher runs 2 NFE per step (one batched 2B "
        "forward), a w-conditioned student 1. Latency is the median wall time of `demo.core.generate.generate` for 1 and 16 "
        f"images after a warm-up; img/s is at batch 16. `overhead` = sampler time / (NFE × the bare network's time per "
        f"NFE on the same batch), 1.0 is the floor, goal ≤ {OVERHEAD_GOAL:.2f}. "
        + (
            f"`{mem}`: peak {'resident memory' if 'rss' in mem else 'CUDA allocation'} during the batch-16 sampling runs, over the memory before them."
            if mem
            else ""
        ),
        "",
        markdown_table(rows, [c for c in cols if c]),
    ]
    notes = [f"- {r['model']}: {r['note']}" for r in rows if r.get("note")]
    loads = [v for v in (m.get("load_avg_start"), m.get("load_avg_end")) if v is not None]
    if loads and max(loads) > m["cpu_count"]:
        notes.append(
            f"- The load average ({max(loads):g}) exceeded the {m['cpu_count']} cores: other processes competed for the CPU, so times are inflated and noisy."
        )
    if report.get("quality_note"):
        notes.append(f"- Quality: {report['quality_note']}")
    if notes:
        out += ["", *notes]
    checks = report.get("checks") or []
    if checks:
        out += ["", "## Goals", "", *[f"- {'✅' if c['ok'] else '❌'} {c['what']}" for c in checks]]
    if report.get("variants"):
        out += [
            "",
            "## Variants of the teacher's forward",
            "",
            "Forward of the CFG batch; `speedup` is against fp32 eager (> 1 is faster).",
            "",
        ]
        out.append(
            markdown_table(
                report["variants"], ["variant", "model", "batch", "forward_ms", "speedup", "max_abs_diff", "compile_s", "status"]
            )
        )
    if report.get("app"):
        a = report["app"]
        out += ["", "## App", "", *[f"- {k}: {format_value(v)}" for k, v in a.items()]]
    return "\n".join(out) + "\n"


def pareto_figure(rows: list[dict]):
    """Quality against batch-1 latency when quality was measured, otherwise latency against NFE (analysis.plots)."""
    from analysis.plots import plot_pareto

    labelled = [{**r, "label": f"{r['model']} · {r['steps']}"} for r in rows]
    if any(r.get("frechet_distance") is not None for r in rows):
        return plot_pareto(
            labelled, x="latency_ms_b1", y="frechet_distance", label="label", title="Fréchet distance against latency (batch 1)"
        )
    return plot_pareto(
        labelled, x="nfe", y="latency_ms_b1", label="label", title="Latency (batch 1) against NFE — quality not measured"
    )


def goal_checks(rows: list[dict]) -> list[dict]:
    checks = (
        [
            {
                "what": f"sampler overhead ≤ {OVERHEAD_GOAL:.2f} at batch {BATCH} for every row (worst {max(r['overhead'] for r in rows):.3f})",
                "ok": all(r["overhead"] <= OVERHEAD_GOAL for r in rows),
            }
        ]
        if rows
        else []
    )
    for r in rows:
        s = r.get("speedup_vs_teacher_64")
        if r["kind"] == "student" and s is not None and r["steps"] in (1, 4):
            need = 100 if r["steps"] == 1 else 25
            checks.append(
                {
                    "what": f"{r['model']} ({r['steps']} step{'s' if r['steps'] > 1 else ''}): {s:.1f}× the teacher's img/s at 64 steps (goal ≥ {need}×)",
                    "ok": s >= need,
                }
            )
    return checks


# ---- the run ----
def run(args, targets: list[Target]) -> dict:
    from demo.core.models import load_model_folder

    load_start = load_average()
    classifier = reference = None
    quality_note = "skipped (--quick)" if args.quick else None
    if not args.quick:
        try:
            from analysis.classifier import load_classifier
            from analysis.metrics import load_reference

            classifier, reference = load_classifier(device=args.device), load_reference()
        except FileNotFoundError as e:
            quality_note = f"skipped ({e})"
            print(f"note: quality is not measured: {e}")
        if classifier is not None:
            quality_note = (
                f"Fréchet distance and accuracy of {args.n} samples (classes cycled, seed {args.seed}"
                f"{', bf16 autocast' if args.quality_bf16 else ''}) in the Fashion-MNIST classifier's features"
            )
    models, rows = {}, []
    for target in targets:
        if target.folder not in models:
            models[target.folder] = load_model_folder(target.folder, device=args.device, name=target.name)
        model = models[target.folder]
        say(f"bench: {target.name} at {target.steps} steps …")
        row = measure_row(model, target, args.quick, seed=args.seed)
        if classifier is not None:
            say(f"bench: {target.name} at {target.steps} steps: quality on {args.n} samples …")
            row.update(
                quality(
                    target.folder,
                    model,
                    target.steps,
                    args.n,
                    classifier,
                    reference,
                    args.cache,
                    args.quality_bf16,
                    seed=args.seed,
                )
            )
        else:
            row.update(frechet_distance=None, accuracy=None)
        rows.append(row)
    base = {r["model"]: r["img_per_s"] for r in rows if r["kind"] == "teacher" and r["steps"] == TEACHER_STEPS[0]}
    for r, t in zip(rows, targets):  # against the model's own teacher at 64 steps, else the first teacher benched
        ref = base.get(t.name if t.kind == "teacher" else t.teacher, next(iter(base.values())))
        r["speedup_vs_teacher_64"] = round(r["img_per_s"] / ref, 2)
    teacher_t = targets[0]
    say("bench: variants of the teacher's forward …")
    variants = variant_rows(models[teacher_t.folder], args.quick, args.threads, args.compile_timeout)
    app = None
    if args.app:
        say("bench: the app's cold start and /compare …")
        student = showcase_student(targets, teacher_t)
        app = app_bench(args.models_dir, teacher_t, student, args.threads, args.device, args.quick)
        if app["status"] != "ok":
            print(f"note: app {app['status']}")
    machine = {
        **machine_info(args.threads, args.device, args.quick),
        "load_avg_start": load_start,
        "load_avg_end": load_average(),
    }
    return {
        "machine": machine,
        "rows": rows,
        "variants": variants,
        "app": app,
        "checks": goal_checks(rows),
        "quality_note": quality_note,
    }


def write_outputs(report: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "bench.md").write_text(to_markdown(report))
    fig = pareto_figure(report["rows"])
    from analysis.figure_png import write_html, write_png

    written = [out / "bench.json", out / "bench.md", write_html(fig, out / "pareto.html")]

    if write_png(fig, out / "pareto.png") is not None:
        written.append(out / "pareto.png")
    return written


def parse_args(argv=None):
    """Parse and check the arguments (without importing torch, so a mistake is reported at once)."""
    p = argparse.ArgumentParser(prog="python -m analysis.bench", description=__doc__.splitlines()[2])
    p.add_argument("--quick", action="store_true", help="fewer repeats; no quality metrics, no torch.compile")
    p.add_argument("--json", action="store_true", help="print the rows as one JSON list on the last line")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT.relative_to(REPO)}/)")
    p.add_argument(
        "--models-dir", type=Path, default=DEFAULT_MODELS, help="folder holding the model folders (default assets/models)"
    )
    p.add_argument(
        "--teacher", default=None, help=f"the teacher's name (default {DEFAULT_TEACHER} when present, else every teacher)"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's, which follows OMP_NUM_THREADS)"
    )
    p.add_argument("--app", action="store_true", help="also measure the app's cold start and /compare latency")
    p.add_argument("--n", type=int, default=1000, help="samples per row for Fréchet distance and accuracy (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--quality-fp32",
        dest="quality_bf16",
        action="store_false",
        help="sample the quality rows in fp32 (default: bf16 autocast, as the reports do; timings are fp32 either way)",
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="per-seed feature sets cached by weights and settings, shared with the reports (default: analysis.protocol.FEATURES_DIR)",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--compile-timeout", type=float, default=300.0, help="seconds torch.compile may take before it is reported as timed out"
    )
    p.add_argument("--compile-probe", default=None, help=argparse.SUPPRESS)  # internal: the torch.compile child
    args = p.parse_args(argv)
    cpus = os.cpu_count() or 1
    if args.threads is not None and not 1 <= args.threads <= cpus:
        raise ValueError(f"--threads must be in 1..{cpus}, got {args.threads}.")
    if args.n < 10:
        raise ValueError(f"--n must be at least 10 (Fréchet distance needs a covariance), got {args.n}.")
    if args.compile_timeout <= 0:
        raise ValueError(f"--compile-timeout must be positive, got {args.compile_timeout:g}.")
    if args.device is not None and args.device.split(":")[0] not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda, got {args.device!r}.")
    if args.compile_probe is None and not args.models_dir.is_dir():
        raise ValueError(f"--models-dir {args.models_dir} is not a folder.")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} exists and is not a folder.")
    return args


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        targets = find_targets(args.models_dir, args.teacher) if args.compile_probe is None else []
        import torch

        args.threads = args.threads or torch.get_num_threads()
        args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {args.device} was asked for but CUDA is not available.")
        torch.set_num_threads(args.threads)
        if args.compile_probe is not None:
            print(json.dumps(compile_probe(args.compile_probe, args.device)))
            return 0
        report = run(args, targets)
    except ValueError as e:  # ModelFolderError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    written = write_outputs(report, args.out)
    print(to_markdown(report))
    print("wrote " + ", ".join(str(p) for p in written))
    if args.json:
        print(
            json.dumps(
                [
                    {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
                    for r in report["rows"]
                ]
            )
        )
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
