"""Issue 22's probe families against a really served app: `python app.py` with the shipped models, plus the CLIs and
the start-up settings, each probe classified as handled or not. Not collected by pytest (no `test_` prefix).

    python tests/probe_app.py            # about 30 minutes on 2 CPU cores (one busy); exit code 0 only when every probe is handled

What it does:
1. starts `python app.py` on a free loopback port with a temporary GDL_RUNS_DIR and an extra GDL_MODEL_ROOTS root of
   crafted bad model folders (copies of a shipped teacher: weights symlinked from outside the roots, a card that is a
   list, num_classes a string, a corrupt tirt.safetensors, negative num_train_timesteps, a 300-character card name,
   a 255-character folder name) and two finished jobs in the job store (one whose error holds absolute paths);
2. sends the probe families to every API endpoint with gradio_client (NaN and ±inf, which gradio_client cannot encode
   as JSON, through Gradio's plain HTTP API), a maximum request followed by a small /compare, and oversized uploads;
3. runs `python -m demo.sample` / `python -m demo.distill` with bad flags and malformed folders, and `python app.py`
   with bad settings;
4. prints a markdown table: family | probes tried | handled | examples of messages.

A probe is handled when it ends in one sentence that names the field (or the file of a malformed folder), nothing
printed a traceback (server log, stderr), no absolute server path appears in the text and the server still answers.
No probe can train: the app runs with GDL_MIN_FREE_GB=1e6, so a /distill_start that got past validation is refused
by the disk check (and counted as not handled), and the distill CLI runs with an empty FASHION_MNIST_DIR.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from demo.core.paths import REPO_ROOT

REPO = REPO_ROOT  # demo.core.paths: the one definition of the repository's folders
MODELS = REPO / "assets" / "models"
TEACHER = "fmnist-teacher"  # the teacher the shipped v2 students name; the crafted folders are copies of it
STUDENT = "fmnist-pd-4"  # a 4-step student of that teacher (the app's default pair)
SECRET = "fmnist-teacher-secret"  # the copy outside every root that a symlinked folder points into


# ---- what a handled answer looks like ----


def one_sentence(text: str) -> bool:
    return bool(text.strip()) and "\n" not in text.strip() and len(text) < 2000 and "Traceback" not in text


_ABS = re.compile(r"(?<![\w.:/~])/(?:[\w.@+-]+/)+[\w.@+-]*")


def leaked_paths(text: str, sent) -> list[str]:
    """Absolute paths of two or more parts in `text` that the caller did not send itself."""
    values = [x for v in (sent if isinstance(sent, list | tuple) else [sent]) for x in (v if isinstance(v, list) else [v])]
    for v in sorted((v for v in values if isinstance(v, str)), key=len, reverse=True):  # the longest first: a name inside another
        if v:
            text = text.replace(v, "")
    return _ABS.findall(text)


@dataclass
class Probe:
    family: str
    what: str
    handled: bool
    message: str
    why: str = ""


@dataclass
class Report:
    probes: list[Probe] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, family: str, what: str, handled: bool, message: str, why: str = "") -> None:
        self.probes.append(Probe(family, what, handled, message, why))
        mark = "ok " if handled else "NOT"
        print(f"  [{mark}] {family} · {what}: {message[:150]!r}{'  <- ' + why if why else ''}", flush=True)

    def table(self) -> str:
        rows = ["| family | probes tried | handled | examples of messages |", "|---|---|---|---|"]
        for fam in dict.fromkeys(p.family for p in self.probes):
            ps = [p for p in self.probes if p.family == fam]
            examples, seen = [], set()
            for p in sorted(ps, key=lambda p: p.handled):  # unhandled ones first: they are the news
                short = p.message.strip().splitlines()[0][:90] if p.message.strip() else "(no message)"
                if short not in seen and len(examples) < 2:
                    seen.add(short)
                    examples.append(("NOT HANDLED: " if not p.handled else "") + short)
            cell = " · ".join(f"“{e}”" for e in examples).replace("|", "\\|")
            rows.append(f"| {fam} | {len(ps)} | {sum(p.handled for p in ps)} | {cell} |")
        return "\n".join(rows)


# ---- nothing read outside the roots, nothing written into the repository ----


class Watch:
    """inotify (Linux) on the folders outside every root: which of their files anything opened or changed."""

    MASK = 0x1 | 0x2 | 0x20 | 0x100  # IN_ACCESS | IN_MODIFY | IN_OPEN | IN_CREATE

    def __init__(self, folders: list[Path]):
        import ctypes

        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK)
        self.names = {self._libc.inotify_add_watch(self.fd, str(f).encode(), self.MASK): f for f in folders}

    def events(self) -> list[str]:
        import struct

        out = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            i = 0
            while i < len(data):
                wd, mask, _cookie, size = struct.unpack_from("iIII", data, i)
                name = data[i + 16 : i + 16 + size].rstrip(b"\0").decode(errors="replace")
                kind = "opened" if mask & 0x20 else "read" if mask & 0x1 else "written"
                out.append(f"{kind} {self.names.get(wd, Path('?')).name}/{name}")
                i += 16 + size
        return sorted(set(out))


def repo_changes() -> set[str]:
    """Files git sees as new or changed in the repository (ignored ones too), caches aside."""
    out = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout
    return {ln for ln in out.splitlines() if "__pycache__" not in ln and ".pytest_cache" not in ln}


# ---- the served app ----


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python app.py` in a subprocess, its stdout and stderr in one log file."""

    def __init__(self, env: dict, cwd: Path, log: Path):
        self.port = int(env["GRADIO_SERVER_PORT"])
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = log
        self._log = open(log, "w")  # noqa: SIM115  (open for the server's lifetime)
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "app.py")], env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 180) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise SystemExit(f"app.py exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(self.url + "gradio_api/info", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise SystemExit(f"app.py did not answer within {timeout:.0f} s:\n{self.log()[-3000:]}")

    def wait_log(self, text: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if text in self.log():
                return True
            time.sleep(1)
        return False

    def answers(self) -> bool:
        try:
            return self.proc.poll() is None and httpx.get(self.url + "gradio_api/info", timeout=20).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def raw_call(url: str, api_name: str, data: list, timeout: float = 120) -> tuple[str, object]:
    """One call over Gradio's HTTP API, so that NaN and ±inf reach the server as a client could send them."""
    r = httpx.post(
        f"{url}gradio_api/call{api_name}",
        content=json.dumps({"data": data}),
        headers={"content-type": "application/json"},
        timeout=timeout,
    )
    if r.status_code != 200:
        return "error", f"HTTP {r.status_code}: {r.text[:300]}"
    event = None
    with httpx.stream("GET", f"{url}gradio_api/call{api_name}/{r.json()['event_id']}", timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: ") and event in ("complete", "error"):
                payload = json.loads(line[len("data: ") :])
                return event, (payload or {}).get("error") if event == "error" and isinstance(payload, dict) else payload
    return event or "none", None


def _finite(v) -> bool:
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, list | tuple):
        return all(_finite(x) for x in v)
    return True


# ---- crafted folders and seeded jobs ----


def craft_roots(tmp: Path) -> dict[str, Path]:
    """The extra model root with one bad folder per malformed-folder probe, and the copy outside every root."""
    extra, outside = tmp / "extra-models", tmp / "outside"
    shutil.copytree(MODELS / TEACHER, outside / SECRET)
    folders = {}

    def copy(name: str, card_name: str | None = None) -> Path:
        f = extra / name
        shutil.copytree(MODELS / TEACHER, f)
        card = json.loads((f / "card.json").read_text())
        card["name"] = card_name or name
        (f / "card.json").write_text(json.dumps(card))
        folders[name] = f
        return f

    f = copy("probe-symlinked")
    w = f / "unet" / "diffusion_pytorch_model.safetensors"
    w.unlink()
    w.symlink_to(outside / SECRET / "unet" / "diffusion_pytorch_model.safetensors")
    f = copy("probe-list-card")
    (f / "card.json").write_text("[1, 2, 3]")
    f = copy("probe-string-classes")
    (f / "card.json").write_text(json.dumps({**json.loads((f / "card.json").read_text()), "num_classes": "ten"}))
    f = copy("probe-corrupt-tirt")
    (f / "tirt.safetensors").write_bytes(b"\x07not a safetensors file")
    f = copy("probe-negative-timesteps")
    cfg = f / "scheduler" / "scheduler_config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "num_train_timesteps": -5}))
    copy("probe-long-card-name", card_name="n" * 300)  # a card whose name no request may carry
    copy("L" * 255)  # the longest folder name Linux allows: a valid model
    return folders


def seed_jobs(runs: Path, tmp: Path) -> None:
    """Two finished jobs (ids 1 and 2), so that job id 1.5 rounded to 2 would be visible; job 2's error holds the
    absolute paths and the worker command line a status must not show."""
    sys.path.insert(0, str(REPO))
    from demo.app.jobs import _SCHEMA, DB_NAME

    runs.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(runs / DB_NAME)
    db.executescript(_SCHEMA)
    spec = {
        "method": "dash",
        "iterations": 10,
        "teacher": str(MODELS / TEACHER),
        "init": None,
        "batch_size": 4,
        "lr": 1e-3,
        "seed": 0,
        "name": None,
        "log_every": None,
        "checkpoint_every": None,
        "num_processes": 1,
        "extra_args": [],
    }
    error = (
        f"$ {sys.executable} -m demo.distill --method dash --teacher {MODELS / TEACHER} --out {runs}/00002-dash\n"
        f"ValueError: Model folder {tmp}/extra-models/probe-corrupt-tirt could not be read from {runs}/00002-dash"
    )
    for job_id, state, err in ((1, "cancelled", None), (2, "failed", error)):
        run_dir = runs / f"{job_id:05d}-dash"
        run_dir.mkdir()
        db.execute(
            "INSERT INTO jobs (id, method, state, run_dir, spec, created, started, finished, error) VALUES (?, 'dash', ?, ?, ?, ?, ?, ?, ?)",
            (job_id, state, str(run_dir), json.dumps(spec), time.time() - 60, time.time() - 50, time.time() - 40, err),
        )
    db.commit()
    db.close()


# ---- the API probes ----


# A small valid call per endpoint with parameters; each probe replaces one value by a bad one.
def valid_calls() -> dict[str, dict]:
    return {
        "/compare": {
            "teacher": TEACHER,
            "student": STUDENT,
            "class_label": "3",
            "guidance": 2.0,
            "teacher_steps": 8,
            "student_steps": 4,
            "seed": 0,
            "sampler": "ddim",
            "n": 1,
            "guidance_interval": "",
            "clip_x0": False,
        },
        "/student_defaults": {"student": STUDENT, "teacher_steps": 8},
        "/trajectory": {
            "teacher": TEACHER,
            "student": STUDENT,
            "class_label": "3",
            "guidance": 2.0,
            "teacher_steps": 8,
            "student_steps": 4,
            "seed": 0,
            "sampler": "ddim",
        },
        "/sketch_refined": {
            "sketch": "fmnist-pd-1",
            "sketch_steps": 1,
            "refined": "fmnist-hd",
            "refined_steps": 1,
            "class_label": "0",
            "guidance": 2.0,
            "seed": 0,
            "sampler": "ddim",
        },
        "/branch_gap": {
            "teacher": TEACHER,
            "models": ["fmnist-dash"],
            "n_images": 4,
            "n_timesteps": 2,
            "seed": 0,
            "guidance": 2.0,
        },
        "/w_sweep": {"models": ["fmnist-dash"], "class_label": "0", "seed": 0, "steps": 2, "sampler": "ddim"},
        "/grid": {"model": STUDENT, "class_label": "0", "seed": 0, "steps": [1], "guidances": [1.0], "sampler": "ddim"},
        "/embedding": {
            "models": ["fmnist-dash"],
            "n_per_model": 8,
            "steps": 2,
            "guidance": 2.0,
            "seed": 0,
            "include_real": False,
            "color_by": "model",
        },
        "/metrics": {"x_axis": "nfe", "y_metric": "frechet_distance", "guidance": 2.0, "all_columns": False},
        "/loss_curves": {"run": None},
        "/distill_start": {
            "method": "dash",
            "iterations": 2,
            "teacher": TEACHER,
            "init": "",
            "batch_size": 4,
            "lr": 1e-3,
            "seed": 0,
        },
        "/distill_status": {"job_id": 1},
        "/distill_cancel": {"job_id": 1},
        "/distill_resume": {"job_id": 1},
        "/distill_preview": {"job_id": 1},
    }


MODEL_PARAMS = {"teacher", "student", "sketch", "refined", "model", "models", "init", "run"}
WHOLE_PARAMS = {
    "teacher_steps",
    "student_steps",
    "sketch_steps",
    "refined_steps",
    "seed",
    "n_images",
    "n_timesteps",
    "steps",
    "n_per_model",
    "iterations",
    "batch_size",
}
FLOAT_PARAMS = {"guidance", "lr"}
CHOICE_PARAMS = {"class_label", "sampler", "n", "x_axis", "y_metric", "color_by", "method"}


def bad_numbers(param: str) -> list:
    values = [math.nan, math.inf, -math.inf, 10**30, -1, "abc"]
    if param in WHOLE_PARAMS:
        values.insert(3, 1.5)
    if param == "seed":
        values.append(1e30)
    if param in FLOAT_PARAMS:
        values.append(9.0 if param == "guidance" else 2.0)
    return values


def bad_choices(param: str) -> list:
    return {"class_label": ["99", "1.5", "shoe", -1], "n": [5, 2.5, "64"], "guidance": [2.5]}.get(param, ["no-such-choice", 3])


def bad_names(tmp: Path, plural: bool) -> list:
    names = [
        "x" * 300,
        "a/" * 600 + "b",
        "../../etc",
        "../../../etc/passwd",
        "/etc/passwd",
        str(tmp / "outside" / SECRET),
        "no-such-model",
        f"{TEACHER}/../../..",
        "n" * 300,
    ]
    return [[n] for n in names] + [[], [TEACHER] * 65] if plural else names


def field_words(param: str, label: str | None) -> list[str]:
    words = {
        param,
        param.replace("_", " "),
        *(w for w in (label or "").lower().replace("(", " ").replace(")", " ").split() if len(w) > 2),
    }
    words -= {"the", "per", "for", "one", "optional", "images"} if param != "n_images" else {"the", "per", "for"}
    if param in MODEL_PARAMS:
        words |= {"model", "run"}
    if param == "job_id":
        words |= {"job"}
    if param == "n":
        words |= {"batch"}
    return sorted(words)


class ApiProber:
    def __init__(self, server: Server, report: Report, tmp: Path):
        from gradio_client import Client

        self.server, self.report, self.tmp = server, report, tmp
        self.client = Client(server.url, verbose=False, download_files=False)
        info = httpx.get(server.url + "gradio_api/info", timeout=30).json()["named_endpoints"]
        self.order = {name: [p["parameter_name"] for p in e["parameters"]] for name, e in info.items()}
        self.labels = {(name, p["parameter_name"]): p.get("label") for name, e in info.items() for p in e["parameters"]}
        self.valid = valid_calls()

    def call(self, api_name: str, args: dict, timeout: float = 120) -> tuple[bool, str, object]:
        """(ok, error message, result): gradio_client, or the plain HTTP API for non-finite numbers."""
        from gradio_client.exceptions import AppError

        if all(_finite(v) for v in args.values()):
            try:
                return True, "", self.client.predict(api_name=api_name, **args)
            except AppError as e:
                return False, str(e), None
            except Exception as e:  # noqa: BLE001  (anything else the client raises is an unhandled answer)
                return False, f"{type(e).__name__}: {e}", None
        event, data = raw_call(self.server.url, api_name, [args[p] for p in self.order[api_name]], timeout)
        return (event == "complete"), ("" if event == "complete" else str(data)), data

    def probe(
        self,
        family: str,
        api_name: str,
        param: str | None,
        value,
        expect: list[str] | None = None,
        args: dict | None = None,
        ok_by_design: bool = False,
    ) -> None:
        """Send the valid call of `api_name` with `param` = `value`; it must be refused with one sentence naming `expect`."""
        args = dict(args or self.valid[api_name])
        if param is not None:
            args[param] = value
        before = len(self.server.log())
        ok, message, result = self.call(api_name, args)
        time.sleep(0.05)
        new_log = self.server.log()[before:]
        what = f"{api_name} {param}={_short(value)}"
        words = expect or field_words(param or "", self.labels.get((api_name, param)))
        why = []
        if ok and not ok_by_design:
            why.append(f"accepted ({_short(result, 80)})")
        if not ok and not one_sentence(message):
            why.append("not one sentence")
        if not ok and not any(w.lower() in message.lower() for w in words):
            why.append(f"does not name {words[:3]}")
        if "Traceback" in new_log:
            why.append("traceback in the server log: " + new_log[new_log.index("Traceback") :][-300:].replace("\n", " ⏎ "))
        leaks = leaked_paths(
            message + (json.dumps(result, default=str) if ok and isinstance(result, dict) else ""), list(args.values())
        )
        if leaks:
            why.append(f"server paths {leaks[:2]}")
        if not self.server.answers():
            why.append("server no longer answers")
        text = (
            message
            if not ok
            else f"(accepted by design: {_short(result, 70)})"
            if ok_by_design
            else f"(accepted) {_short(result, 70)}"
        )
        self.report.add(family, what, not why, text, "; ".join(why))

    def run_all(self) -> None:
        v = self.valid
        # Controls: the valid calls the probes start from must succeed, or every refusal below could be of another field.
        for api_name in ("/compare", "/student_defaults", "/trajectory", "/sketch_refined", "/metrics", "/distill_status"):
            ok, message, _ = self.call(api_name, v[api_name])
            self.report.add("valid requests (control)", api_name, ok and self.server.answers(), message or "(answered)")

        for api_name, args in v.items():
            for param in args:
                if param in WHOLE_PARAMS | FLOAT_PARAMS and not (api_name == "/grid" and param == "steps"):
                    for value in bad_numbers(param):
                        self.probe("bad numbers (NaN, ±inf, 1.5, 10**30, −1, text, 1e30)", api_name, param, value)
                elif param in CHOICE_PARAMS or (api_name == "/metrics" and param == "guidance"):
                    for value in bad_choices(param):
                        self.probe("unknown choices", api_name, param, value)
                elif param in ("steps", "guidances"):  # the grid's checkbox groups
                    for value in ([1000], [1.5], "1,2", [math.nan]):
                        self.probe("unknown choices", api_name, param, value)
                elif param in ("clip_x0", "include_real", "all_columns"):
                    self.probe("unknown choices", api_name, param, "yes")
                elif param == "guidance_interval":
                    for value in ("a,b", "900,100", "x" * 5000):
                        self.probe("unknown choices", api_name, param, value)
                elif param in MODEL_PARAMS:
                    for value in bad_names(self.tmp, plural=param == "models"):
                        by_design = (
                            api_name == "/student_defaults"
                        )  # a dropdown's change helper: it leaves the controls as they are
                        fam = (
                            "/student_defaults with bad names (controls left unchanged, by design)"
                            if by_design
                            else "model names: > 255 chars, traversal, outside"
                        )
                        self.probe(fam, api_name, param, value, ok_by_design=by_design)
                elif param == "job_id":
                    for value in (1.5, 0, 10**30, -1, "abc", math.nan, math.inf):
                        self.probe("job ids (1.5, 0, 10**30, …)", api_name, param, value)

        # Malformed folders under GDL_MODEL_ROOTS, through every path that opens a folder.
        expected = {
            "probe-symlinked": ["outside the allowed model folders"],
            "probe-list-card": ["card.json"],
            "probe-string-classes": ["num_classes"],
            "probe-corrupt-tirt": ["tirt.safetensors"],
            "probe-negative-timesteps": ["num_train_timesteps"],
        }
        for name, words in expected.items():
            for api_name, param in (
                ("/distill_start", "teacher"),
                ("/distill_start", "init"),
                ("/compare", "teacher"),
                ("/compare", "student"),
                ("/trajectory", "student"),
                ("/branch_gap", "models"),
                ("/branch_gap", "teacher"),
                ("/grid", "model"),
                ("/embedding", "models"),
                ("/w_sweep", "models"),
                ("/sketch_refined", "sketch"),
            ):
                value = [name] if param == "models" else name
                self.probe("malformed model folders (symlink, list card, …)", api_name, param, value, expect=words)
        # The longest folder name a filesystem allows is a model like any other; its card-less name is usable.
        self.probe(
            "malformed model folders (symlink, list card, …)", "/student_defaults", "student", "L" * 255, ok_by_design=True
        )
        ok, message, result = self.call("/refresh_models", {})
        self.report.add(
            "malformed model folders (symlink, list card, …)",
            "/refresh_models lists the roots",
            ok and "model folders" in str(result),
            _short(result[-1] if ok and result else message, 90),
        )
        # Every model a dropdown offers can be requested back by that name (a 300-character card name once could not).
        listed = [c[0] for c in result[0]["choices"]] if ok else []
        unusable = [n for n in listed if len(n) > 1024 or any(len(part) > 255 for part in n.split("/"))]
        self.report.add(
            "malformed model folders (symlink, list card, …)",
            "every listed name is one a request may carry",
            ok and not unusable,
            f"{len(listed)} names listed, {len(unusable)} too long to request"
            + (f" ({_short(unusable[0], 30)})" if unusable else ""),
        )
        self.probe(
            "malformed model folders (symlink, list card, …)",
            "/student_defaults",
            "student",
            "probe-long-card-name",
            ok_by_design=True,
        )

        # A job status whose stored error holds absolute paths and the worker's command line.
        ok, message, status = self.call("/distill_status", {"job_id": 2})
        leaks = leaked_paths(json.dumps(status, default=str), [])
        self.report.add(
            "path-free status and errors",
            "/distill_status of a failed job",
            ok and not leaks and "$ " not in str(status),
            _short(status.get("error") if isinstance(status, dict) else message, 90),
            f"server paths {leaks[:2]}" if leaks else "",
        )
        ok, message, runs = self.call("/distill_runs", {})
        self.report.add(
            "path-free status and errors",
            "/distill_runs",
            ok and not leaked_paths(json.dumps(runs, default=str), []),
            _short(runs, 90),
        )

    def max_request(self) -> str:
        """One over-budget request (refused), then the largest request the budget allows and, right behind it, a small
        /compare: how long the small one takes while the big one holds a slot, and how the big one ends."""
        fam = "work budget and time limit"
        big = {**self.valid["/compare"], "n": 64, "teacher_steps": 250}
        start = time.monotonic()
        ok, message, _ = self.call("/compare", big)
        refused_in = time.monotonic() - start
        self.report.add(
            fam, "/compare n=64 × 250 teacher steps", not ok and "GDL_MAX_WORK" in message and one_sentence(message), message
        )
        m = re.search(r"needs ([\d,]+) network evaluations.*limit of ([\d,]+)", message)
        if not m:
            return "the over-budget request was not refused with the budget sentence; no timing run."
        cost, limit = (int(x.replace(",", "")) for x in m.groups())
        per_image_student = cost / 64 - 2 * 250
        steps = max(1, min(250, int((limit / 64 - per_image_student) // 2)))  # the largest teacher step count within the budget
        self.server.wait_log("preloaded", 120)  # the start-up warm-up is not part of the timing
        job = self.client.submit(api_name="/compare", **{**big, "teacher_steps": steps})
        t0 = time.monotonic()
        while job.status().code.name not in ("PROCESSING", "ITERATING", "FINISHED") and time.monotonic() - t0 < 30:
            time.sleep(0.1)
        time.sleep(2.0)  # the big one is sampling now
        start = time.monotonic()
        ok, message, _ = self.call("/compare", self.valid["/compare"])
        small = time.monotonic() - start
        self.report.add(
            fam, f"small /compare behind n=64 × {steps} steps", ok and small < 15, f"served in {small:.1f} s" if ok else message
        )
        try:
            job.result(timeout=600)
            end, outcome = time.monotonic(), "completed"
        except Exception as e:  # noqa: BLE001  (the time limit's gr.Error)
            end, outcome = time.monotonic(), str(e)
        big_s = end - t0
        cut = "time limit" in outcome
        self.report.add(
            fam,
            f"/compare n=64 × {steps} teacher steps (largest within the budget)",
            cut or outcome == "completed",
            outcome if cut else f"completed in {big_s:.0f} s",
        )
        return (
            f"over-budget request (n = 64 × 250 teacher steps, {cost:,} NFE·images > {limit:,}) refused in {refused_in:.2f} s; "
            f"the largest allowed one (n = 64 × {steps} teacher steps) {'was stopped at the time limit' if cut else 'completed'} "
            f"after {big_s:.0f} s; a small /compare (1 image, 8 + 4 steps) sent 2 s after it started was served in {small:.1f} s."
        )

    def uploads(self, limit_mb: float) -> None:
        fam = "uploads over GDL_MAX_UPLOAD_MB"
        for size, should_pass in ((1024, True), (int((limit_mb + 1) * 2**20), False), (int(limit_mb * 4 * 2**20), False)):
            before = len(self.server.log())
            r = httpx.post(
                self.server.url + "gradio_api/upload", files={"files": ("probe.png", b"\0" * size, "image/png")}, timeout=60
            )
            new_log = self.server.log()[before:]
            text = r.text[:300]
            try:
                body = r.json()
                detail = body.get("detail", text) if isinstance(body, dict) else text
            except ValueError:
                detail = text
            detail = detail if isinstance(detail, str) else json.dumps(detail)
            if should_pass:
                handled = r.status_code == 200  # its answer is Gradio's handle for the file: a path in its temporary folder
                msg = f"HTTP {r.status_code} (a 1 kB file is accepted)"
            else:
                handled = (
                    r.status_code in (400, 413)
                    and one_sentence(detail)
                    and ("size" in detail.lower() or "large" in detail.lower())
                )
                msg = f"HTTP {r.status_code}: {detail}"
            handled = handled and "Traceback" not in new_log and self.server.answers()
            self.report.add(fam, f"{size / 2**20:.1f} MB", handled, msg)


def _short(value, n: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 1] + "…"


# ---- the CLIs and the settings ----


def run_cli(args: list[str], env: dict, timeout: float = 300) -> tuple[int, str, str]:
    p = subprocess.run(
        [sys.executable, "-m", *args], check=False, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    return p.returncode, p.stdout, p.stderr


def cli_probes(report: Report, tmp: Path, folders: dict[str, Path], env: dict) -> None:
    out = tmp / "cli"
    out.mkdir()
    a_file = out / "a-file"
    a_file.write_text("not a folder")
    (out / "empty-run").mkdir()
    no_data = tmp / "no-fashion-mnist"  # the distill CLI can never train here: a flag that got through meets missing data
    no_data.mkdir()
    env = {**env, "FASHION_MNIST_DIR": str(no_data)}
    malformed = {
        k: v
        for k, v in folders.items()
        if k in ("probe-list-card", "probe-string-classes", "probe-corrupt-tirt", "probe-negative-timesteps")
    }
    words = {
        "probe-list-card": "card.json",
        "probe-string-classes": "num_classes",
        "probe-corrupt-tirt": "tirt.safetensors",
        "probe-negative-timesteps": "num_train_timesteps",
    }

    sample = [
        "demo.sample",
        "--model",
        str(MODELS / "fmnist-dash"),
        "--n",
        "1",
        "--steps",
        "1",
        "--out",
        str(out / "x.png"),
        "--device",
        "cpu",
    ]
    sample_probes = [
        ("--n", "100000000", "--n"),
        ("--out", "/dev/null/x.png", "--out"),
        ("--device", "cuda", "--device"),
        ("--device", "bogus", "--device"),
        ("--seed", "1e20", "--seed"),
        ("--steps", "nan", "--steps"),
        ("--guidance", "inf", "--guidance"),
        ("--batch-size", "0", "--batch-size"),
        ("--out", str(out), "--out"),
        ("--model", "x" * 300, "--model"),
    ] + [("--model", str(f), words[k]) for k, f in malformed.items()]
    for flag, value, expect in sample_probes:
        argv = _replace(sample, flag, value)
        _cli_probe(report, "CLI: python -m demo.sample", argv, env, f"{flag} {_short(value, 30)}", expect)

    distill = [
        "demo.distill",
        "--method",
        "dash",
        "--teacher",
        str(MODELS / TEACHER),
        "--out",
        str(out / "run"),
        "--iterations",
        "1",
        "--batch-size",
        "1",
    ]
    distill_probes = [
        ("--checkpoint-every", "0", "--checkpoint-every"),
        ("--log-every", "0", "--log-every"),
        ("--batch-size", "0", "--batch-size"),
        ("--batch-size", "-1", "--batch-size"),
        ("--seed", "1e20", "--seed"),
        ("--out", str(a_file), "--out"),
        ("--warmup", "-1", "--warmup"),
        ("--ema-decay", "2", "--ema-decay"),
        ("--lr", "nan", "--lr"),
        ("--iterations", "1.5", "--iterations"),
        ("--w-min", "9", "--w-min"),
    ] + [("--teacher", str(f), words[k]) for k, f in malformed.items()]
    for flag, value, expect in distill_probes:
        _cli_probe(
            report, "CLI: python -m demo.distill", _replace(distill, flag, value), env, f"{flag} {_short(value, 30)}", expect
        )
    argv = _replace(distill, "--out", str(out / "empty-run")) + ["--export-only"]
    _cli_probe(report, "CLI: python -m demo.distill", argv, env, "--export-only on an empty folder", "--export-only")


def _replace(argv: list[str], flag: str, value: str) -> list[str]:
    argv = list(argv)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    return argv


def _cli_probe(report: Report, family: str, argv: list[str], env: dict, what: str, expect: str) -> None:
    try:
        code, _out, err = run_cli(argv, env)
    except subprocess.TimeoutExpired:
        report.add(family, what, False, "(still running after 300 s)", "not refused")
        return
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and not ln.startswith(("usage:", " "))]
    last = lines[-1] if lines else ""
    why = []
    if code == 0:
        why.append("exit code 0")
    if "Traceback" in err:
        why.append("traceback on stderr")
    if expect.lower() not in last.lower():
        why.append(f"does not name {expect}")
    if len(lines) != 1:
        why.append(f"{len(lines)} error lines")
    report.add(family, what, not why, last or err[-200:], "; ".join(why))


SETTINGS = [
    ("GDL_RUNS_DIR", "/proc/x"),
    ("GRADIO_SERVER_PORT", "abc"),
    ("GRADIO_SERVER_PORT", "99999"),
    ("GDL_CONCURRENCY", "0"),
    ("GDL_QUEUE_MAX_SIZE", "0"),
    ("GDL_MAX_BATCH", "0"),
    ("GDL_CACHE_SIZE", "many"),
    ("GDL_MAX_WORK", "1e3.5"),
    ("GDL_REQUEST_TIMEOUT", "nan"),
    ("GDL_MAX_UPLOAD_MB", "-1"),
    ("GDL_PRECISION", "fp8"),
    ("GDL_DEVICE", "bogus"),
    ("GDL_ALLOW_HUB", "yes"),
    ("GDL_MAX_JOBS", "0"),
    ("GDL_MAX_ITERATIONS", "x"),
    ("GDL_MIN_FREE_GB", "nan"),
]


def settings_probes(report: Report, tmp: Path, env: dict) -> None:
    for var, value in SETTINGS:
        e = {**env, "GRADIO_SERVER_PORT": str(free_port()), "GDL_PRELOAD": "0", var: value}
        try:
            p = subprocess.run(
                [sys.executable, str(REPO / "app.py")], check=False, env=e, cwd=tmp, capture_output=True, text=True, timeout=90
            )
            code, err, out = p.returncode, p.stderr, p.stdout
        except subprocess.TimeoutExpired as t:  # it started serving: the setting was accepted
            code, err, out = None, _text(t.stderr), _text(t.stdout)
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]  # the sentence is on stderr; Gradio's notes on stdout
        last = lines[-1] if lines else ""
        why = []
        if code is None:
            why.append("started serving (accepted)")
        elif code == 0:
            why.append("exit code 0")
        if len(lines) != 1:
            why.append(f"{len(lines)} lines on stderr")
        if "Traceback" in err + out:
            why.append("traceback")
        if var not in last:
            why.append(f"does not name {var}")
        if leaked_paths(last, [value]):
            why.append("server paths")
        report.add("bad settings (start-up)", f"{var}={value}", not why, last or "(no output)", "; ".join(why))


def _text(data) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


# ---- main ----


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads", type=int, default=1, help="OMP_NUM_THREADS for the app and the CLIs (default 1: a shared 2-core host)"
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=["api", "max", "uploads", "cli", "settings"])
    opts = parser.parse_args()
    report = Report()
    with tempfile.TemporaryDirectory(prefix="gdl-probe-") as tmp_name:
        tmp = Path(tmp_name)
        folders = craft_roots(tmp)
        runs = tmp / "runs"
        seed_jobs(runs, tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GDL_", "GRADIO_"))}
        env.update(
            {
                "GDL_RUNS_DIR": str(runs),
                "GDL_MODEL_ROOTS": str(tmp / "extra-models"),
                "GRADIO_SERVER_NAME": "127.0.0.1",
                "GRADIO_SERVER_PORT": str(free_port()),
                "GRADIO_ANALYTICS_ENABLED": "False",
                "GRADIO_TEMP_DIR": str(tmp / "gradio"),
                "GDL_MIN_FREE_GB": "1e6",  # the safety net: no /distill_start that got through validation can start a worker
                "OMP_NUM_THREADS": str(opts.threads),
                "PYTHONUNBUFFERED": "1",
            }
        )
        timing = ""
        if not {"api", "max", "uploads"} <= set(opts.skip):
            secret = tmp / "outside" / SECRET
            watch = Watch([secret, *(d for d in secret.iterdir() if d.is_dir())])
            before = repo_changes()
            server = Server(env, tmp, tmp / "server.log")
            try:
                server.wait_ready()
                print(f"app.py serving at {server.url}", flush=True)
                prober = ApiProber(server, report, tmp)
                if "api" not in opts.skip:
                    prober.run_all()
                if "uploads" not in opts.skip:
                    prober.uploads(5.0)
                if "max" not in opts.skip:
                    timing = prober.max_request()
                alive = server.answers()
                log = server.log()
            finally:
                server.stop()
            report.add(
                "server after all API probes",
                "still answering, tracebacks in the whole log",
                alive and "Traceback" not in log,
                f"answers: {alive}; tracebacks in the log: {log.count('Traceback')}",
            )
            touched = watch.events()
            report.add(
                "server after all API probes",
                "nothing outside the roots opened or written (inotify)",
                not touched,
                f"{len(touched)} accesses" + (f": {', '.join(touched[:4])}" if touched else ""),
            )
            written = sorted(repo_changes() - before)
            report.add(
                "server after all API probes",
                "nothing written into the repository",
                not written,
                f"{len(written)} new files" + (f": {', '.join(written[:3])}" if written else ""),
            )
            jobs = sqlite3.connect(runs / "jobs.sqlite").execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
            report.add(
                "server after all API probes", "no job was queued by a probe", jobs == 2, f"{jobs} jobs in the store (2 seeded)"
            )
        if "cli" not in opts.skip:
            cli_probes(report, tmp, folders, env)
        if "settings" not in opts.skip:
            settings_probes(report, tmp, env)
    print()
    print(report.table())
    if timing:
        print()
        print("Maximum request: " + timing)
    for note in report.notes:
        print("note: " + note)
    bad = [p for p in report.probes if not p.handled]
    print(f"\n{len(report.probes) - len(bad)} of {len(report.probes)} probes handled.")
    for p in bad:
        print(f"NOT HANDLED: {p.family} · {p.what}: {p.message[:200]!r} ({p.why})")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
