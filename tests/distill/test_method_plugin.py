"""Adding a distillation method is writing one file: a new method written here, in a temporary folder, is found
through GDL_METHOD_MODULES and trained 2 iterations by the real `python -m demo.distill` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_run_argv

from demo.core.models import load_model_folder
from demo.core.paths import REPO_ROOT

REPO = REPO_ROOT  # demo.core.paths: the one definition of the repository's folders
pytestmark = pytest.mark.slow  # a training subprocess: not in `-m "not slow"`

# The whole method: CFG folded into a copy of the teacher's own network at one W (one NFE per step instead of two).
METHOD_FILE = '''
"""CFG folding: a copy of the teacher learns the teacher's guided prediction at one fixed W (--fold-w)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from demo.distill import load_teacher, register, teacher_data
from demo.distill.base import Method, student_card
from demo.core.guidance import guided_x0
from demo.core.models import net_output
from demo.core.schedule import from_x0


@register
class CfgFold(Method):
    name = "cfg-fold"
    cli = {"cfg-fold": "CFG folded into a copy of the teacher at one W"}
    summary = "cfg-fold: CFG folded into the teacher"

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--fold-w", type=float, default=3.0, help="the W folded into the student")

    @classmethod
    def from_args(cls, method, args):
        teacher = load_teacher(args)
        return cls(teacher, teacher_data(args, teacher), args.fold_w, name=args.name)

    def __init__(self, teacher, data, w, name=None):
        self.teacher, self.data, self.w = teacher, data, w
        self.student = copy.deepcopy(teacher.net).train().requires_grad_(True)
        self.card_name = name or "cfg-fold"

    def frozen_modules(self):
        return {"teacher": self.teacher.net}

    def loss(self, step, generator):
        device = next(self.student.parameters()).device
        x0, y = (a.to(device) for a in self.data.batch(step))
        sched = self.teacher.schedule
        # 1. z_t from data at t ~ U{0..T-1}.
        t = torch.randint(0, sched.num_train_timesteps, (x0.shape[0],), generator=generator).to(device)
        z_t = sched.add_noise(x0, torch.randn(x0.shape, generator=generator).to(device), t)
        alpha, sigma = (a.to(device) for a in sched.alpha_sigma(t))
        # 2. The teacher's guided prediction (2 NFE), in the model's own output space; 3. the student's single NFE.
        with torch.no_grad():
            target = from_x0(z_t, guided_x0(self.teacher, z_t, t, y, self.w), alpha, sigma, self.teacher.prediction_type)
        loss = F.mse_loss(net_output(self.student, z_t, t, y).float(), target)
        return loss, {"l_fold": float(loss.detach())}

    def card(self, cfg):
        training = {**self.training_record(cfg), "fold_w": self.w}
        return student_card(self.teacher, self.card_name, self.name, training, self.cli[self.name])
'''


def _distill(argv: list[str], plugin: Path | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GDL_METHOD_MODULES"}
    env["OMP_NUM_THREADS"] = "1"
    if plugin is not None:
        env["GDL_METHOD_MODULES"] = str(plugin)
    cmd = [sys.executable, "-m", "demo.distill", *argv]
    return subprocess.run(cmd, cwd=REPO, env=env, check=False, capture_output=True, text=True, timeout=300)


def test_a_method_written_in_one_file_trains_through_the_cli(tiny_teacher_dir, tmp_path):
    plugin = tmp_path / "plugins" / "cfg_fold.py"
    plugin.parent.mkdir()
    plugin.write_text(textwrap.dedent(METHOD_FILE))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", images=rng.integers(0, 256, (8, 28, 28), dtype=np.uint8), labels=np.arange(8) % 10)
    run = tmp_path / "run"
    argv = tiny_run_argv(
        "cfg-fold", tiny_teacher_dir, run, "--data", str(tmp_path / "data.npz"), "--log-every", "1", "--checkpoint-every", "2"
    )
    argv += ["--fold-w", "2.5"]

    # Without the plugin the method does not exist: argparse's one error line, exit code 2, nothing written.
    refused = _distill(argv, None)
    assert refused.returncode == 2 and "invalid choice: 'cfg-fold'" in refused.stderr.strip().splitlines()[-1]
    assert not run.exists()

    result = _distill(argv, plugin)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["step"] == 2
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "l_fold" in r] == [1, 2] and rows[-1]["event"] == "done"
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-0000002"]
    model = load_model_folder(run / "model")  # the base class's export: weights, the teacher's scheduler, card.json
    card = model.card
    assert (card.kind, card.method, card.name, card.teacher) == ("student", "cfg-fold", "cfg-fold", "tiny-teacher")
    # the method's recipe, then what the loop adds to every exported card: the command, precision and weights' dtype
    recipe = {k: card.training[k] for k in ("iterations", "batch_size", "lr", "fold_w")}
    assert recipe == {"iterations": 2, "batch_size": 2, "lr": 1e-3, "fold_w": 2.5}
    assert card.training["command"].startswith("python -m demo.distill --method cfg-fold ")
    assert (card.training["precision"], card.training["weights"]) == ("float32", "float32")  # --mixed-precision no
    assert card.description == "CFG folded into a copy of the teacher at one W"
    assert json.loads((run / "config.json").read_text())["method"] == {"name": "cfg-fold"}
