"""The generic training loop on the tiny teacher objective: run folders, resume, corrupt checkpoints, EMA export,
early stop, and TIRT's weighting and gradient routing."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import config, tiny_method

from demo.core.data import BatchSampler
from demo.core.models import default_scheduler, load_model_folder, teacher_unet
from demo.core.schedule import NoiseSchedule
from demo.distill.teacher import TIRT, TeacherTraining
from demo.distill.train import TrainConfig, latest_valid_checkpoint, list_checkpoints, train


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "teacher"
    method = tiny_method()
    initial = {k: v.clone() for k, v in method.student.state_dict().items()}
    last = train(method, config(2), run_dir)
    return run_dir, method, initial, last


def test_two_step_run_writes_checkpoints_log_and_model(two_step_run):
    run_dir, method, _, last = two_step_run
    assert [p.name for p in list_checkpoints(run_dir)] == ["checkpoint-0000001", "checkpoint-0000002"]
    for ckpt in list_checkpoints(run_dir):
        assert (ckpt / "state.safetensors").is_file() and (ckpt / "meta.json").is_file()
    assert not list(run_dir.glob(".tmp-*"))  # atomic writes leave no temp folders behind
    log = rows(run_dir)
    assert [r["step"] for r in log] == [1, 2, 2] and log[-1]["event"] == "done"
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["loss_v"]) for r in log[:2])
    assert last["step"] == 2 and last["iterations"] == 2
    assert json.loads((run_dir / "config.json").read_text())["train"]["iterations"] == 2
    model = load_model_folder(run_dir / "model")
    assert model.card.name == "tiny-run" and model.card.kind == "teacher"
    assert model.card.training["iterations"] == 2
    assert model.prediction_type == "v_prediction"
    assert (run_dir / "model" / "tirt.safetensors").is_file()
    assert model.tirt_logits.shape == (1000,)
    torch.testing.assert_close(model.tirt_logits, method.tirt.lambda_t.detach())
    assert float(method.tirt.lambda_t.detach().abs().sum()) > 0  # TIRT was trained (it starts at zero)


def test_training_changes_the_weights_and_exports_the_ema(two_step_run):
    run_dir, method, initial, _ = two_step_run
    model = load_model_folder(run_dir / "model")
    exported = model.net.state_dict()
    # EMA with warm-up decay d_k = min(0.999, (1 + k) / (10 + k)), starting from the initial weights.
    expected = {}
    for name, w0 in initial.items():
        if not w0.is_floating_point():
            continue
        shadow = w0.float()
        for k in (0, 1):
            d = min(0.999, (1 + k) / (10 + k))
            shadow = d * shadow + (1 - d) * method.after[k][name].float()
        expected[name] = shadow
    changed = [n for n in expected if not torch.equal(method.after[1][n], initial[n])]
    assert changed  # the optimiser moved the weights
    for name, value in expected.items():
        torch.testing.assert_close(exported[name], value, rtol=1e-5, atol=1e-6)
    # The live student keeps its raw (non-EMA) weights after the export.
    for name, w in method.student.state_dict().items():
        assert torch.equal(w, method.after[1][name])


@pytest.mark.slow
def test_resume_continues_from_the_last_checkpoint(two_step_run, tmp_path, capsys):
    import shutil

    run_dir = shutil.copytree(two_step_run[0], tmp_path / "resumed")
    capsys.readouterr()
    resumed = tiny_method(seed=1)  # different init: everything must come from the checkpoint
    train(resumed, config(4), run_dir)
    assert "resumed from checkpoint-0000002 at step 2" in capsys.readouterr().out
    log = rows(run_dir)
    assert [r["step"] for r in log if "event" not in r] == [1, 2, 3, 4]
    assert sorted(resumed.after) == [2, 3]  # only steps 3..4 ran
    # An uninterrupted 4-step run ends on the same weights: optimiser state, data and noise all resume by step.
    straight = tiny_method()
    train(straight, config(4), tmp_path / "straight")
    for name, w in straight.student.state_dict().items():
        torch.testing.assert_close(resumed.student.state_dict()[name], w, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(resumed.tirt.lambda_t, straight.tirt.lambda_t, rtol=1e-5, atol=1e-6)
    a, b = load_model_folder(run_dir / "model"), load_model_folder(tmp_path / "straight" / "model")
    for (name, w1), w2 in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        torch.testing.assert_close(w1, w2, rtol=1e-5, atol=1e-6, msg=name)


def test_corrupt_checkpoint_is_skipped(two_step_run, tmp_path, capsys):
    import shutil

    run_dir = shutil.copytree(two_step_run[0], tmp_path / "corrupt")
    state = run_dir / "checkpoint-0000002" / "state.safetensors"
    state.write_bytes(state.read_bytes()[:1000])  # a crash mid-write
    ckpt, meta, tensors = latest_valid_checkpoint(run_dir)
    assert ckpt.name == "checkpoint-0000001" and meta["step"] == 1
    assert any(k.startswith("module.student.") for k in tensors) and any(k.startswith("ema.") for k in tensors)
    capsys.readouterr()
    train(tiny_method(), config(2), run_dir)
    assert "resumed from checkpoint-0000001 at step 1" in capsys.readouterr().out
    assert [r["step"] for r in rows(run_dir) if "event" not in r][-1:] == [2]


def test_checkpoint_with_edited_bytes_or_no_meta_is_skipped(two_step_run, tmp_path):
    import shutil

    run_dir = shutil.copytree(two_step_run[0], tmp_path / "edited")
    state = run_dir / "checkpoint-0000002" / "state.safetensors"
    data = bytearray(state.read_bytes())
    data[-1] ^= 0xFF  # same length, different content: only the hash notices
    state.write_bytes(bytes(data))
    assert latest_valid_checkpoint(run_dir)[0].name == "checkpoint-0000001"
    (run_dir / "checkpoint-0000001" / "meta.json").unlink()
    assert latest_valid_checkpoint(run_dir) is None


def test_should_stop_writes_a_checkpoint_and_returns(tmp_path):
    method = tiny_method()
    last = train(method, config(5, checkpoint_every=100), tmp_path / "stopped", should_stop=lambda: True)
    assert last["stopped"] is True
    assert [p.name for p in list_checkpoints(tmp_path / "stopped")] == ["checkpoint-0000001"]
    assert rows(tmp_path / "stopped")[-1]["event"] == "stopped"
    assert not (tmp_path / "stopped" / "model").exists()


def test_export_only_of_an_unfinished_run_records_its_step(tmp_path):
    run_dir = tmp_path / "early"
    train(tiny_method(), config(5, checkpoint_every=100), run_dir, should_stop=lambda: True)  # stops at step 1
    last = train(tiny_method(seed=1), config(5), run_dir, export_only=True)
    assert last["step"] == 1
    card = load_model_folder(run_dir / "model").card
    assert card.training["iterations"] == 5 and card.training["exported_at_step"] == 1
    train(tiny_method(), config(2), tmp_path / "done")  # a finished run's card carries no such field
    assert "exported_at_step" not in load_model_folder(tmp_path / "done" / "model").card.training


def test_keep_checkpoints_prunes_old_ones(tmp_path):
    train(tiny_method(), config(3, keep_checkpoints=1), tmp_path / "pruned")
    assert [p.name for p in list_checkpoints(tmp_path / "pruned")] == ["checkpoint-0000003"]


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [("iterations", 0, "iterations must be"), ("lr", 2.0, "lr must be"), ("mixed_precision", "fp8", "mixed_precision must be")],
)
def test_train_config_validates(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{field: value})


def test_teacher_loss_is_finite_and_reaches_the_student_and_tirt():
    method = tiny_method()
    loss, stats = method.loss(0, torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert set(stats) >= {"loss_v", "loss_tirt"}
    loss.backward()
    assert all(p.grad is not None for p in method.student.parameters() if p.requires_grad)
    assert method.tirt.lambda_t.grad is not None and float(method.tirt.lambda_t.grad.abs().sum()) > 0


def test_teacher_objective_is_the_models_own_parametrisation():
    """v for the shipped teacher, ε for a DiT-style teacher trained further; an unknown one is refused."""
    net = teacher_unet(channels=(8, 16), layers_per_block=1, attention=False)
    rng = np.random.default_rng(0)
    data = BatchSampler(rng.integers(0, 256, (8, 28, 28), dtype=np.uint8), rng.integers(0, 10, 8), 2)
    loss, stats = TeacherTraining(net, default_scheduler("epsilon"), data).loss(0, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and "loss_eps" in stats and "loss_v" not in stats
    with pytest.raises(ValueError, match="prediction_type"):
        TeacherTraining(net, default_scheduler("flow"), None)


# ---- TIRT ----


def test_tirt_weights_have_unit_mean():
    g = torch.Generator().manual_seed(0)
    tirt = TIRT(NoiseSchedule.cosine(), logits=torch.randn(1000, generator=g))
    t = torch.randint(0, 1000, (64,), generator=g)
    w = tirt.weights(t)
    w = w.detach()
    assert w.shape == (64,) and (w > 0).all()
    assert float(w.mean()) == pytest.approx(1.0, abs=1e-5)
    assert float(w.std()) > 0.1  # not uniform: SNR cap and logits differ over t
    # ω_t = min(SNR_t, 5)·sigmoid(λ_t): capped at 5 for small t, SNR-shaped for large t.
    schedule = NoiseSchedule.cosine()
    for t_ in (10, 900):
        expected = min(float(schedule.snr(t_)), 5.0) * float(torch.sigmoid(tirt.lambda_t[t_].detach()))
        assert float(tirt.omega(torch.tensor([t_])).detach()) == pytest.approx(expected, rel=1e-5)


def test_tirt_fit_loss_trains_lambda_but_not_the_network():
    tirt = TIRT(NoiseSchedule.cosine())
    net = torch.nn.Linear(3, 3)
    t = torch.tensor([100, 500, 900])
    out = net(torch.ones(3, 3))
    eps_err = (out**2).mean(1) * torch.tensor([1e3, 1.0, 1e-6])  # per-example error from the network
    tirt.fit_loss(t, eps_err).backward()
    assert net.weight.grad is None and net.bias.grad is None  # ℓ is detached: the network sees no TIRT gradient
    grad = tirt.lambda_t.grad
    assert grad is not None
    touched = torch.zeros(1000, dtype=torch.bool)
    touched[t] = True
    assert (grad[~touched] == 0).all() and (grad[touched] != 0).all()
    # Optimum ω_t = 1/ℓ_t: a large error pushes λ_t down (positive gradient), a tiny one pushes it up.
    assert float(grad[100]) > 0 and float(grad[900]) < 0


# ---- the registry's builder and the training CLI ----


@pytest.mark.slow
def test_distill_cli_trains_the_registered_teacher(tmp_path, monkeypatch, capsys):
    from helpers import write_idx

    from demo.distill.__main__ import main

    rng = np.random.default_rng(1)
    write_idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", (np.arange(12) % 10).astype(np.uint8))
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    out = tmp_path / "run"
    argv = [
        "--method",
        "teacher",
        "--out",
        str(out),
        "--iterations",
        "2",
        "--batch-size",
        "2",
        "--channels",
        "8,16",
        "--layers-per-block",
        "1",
        "--mixed-precision",
        "no",
        "--log-every",
        "1",
        "--name",
        "cli-teacher",
    ]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["step"] == 2
    assert load_model_folder(out / "model").card.name == "cli-teacher"
    # the folder says how it was made: the exact command, the precision it ran in, the weights' dtype, the loss curve
    training = json.loads((out / "model" / "card.json").read_text())["training"]
    assert training["command"] == shlex.join(["python", "-m", "demo.distill", *argv])
    assert (training["precision"], training["weights"]) == ("float32", "float32")
    curve = (out / "model" / "training_stats.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in curve if "loss" in r] == [1, 2]
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "empty"))
    assert main([*argv[:3], str(tmp_path / "run2"), *argv[4:]]) == 2
    assert re.search(r"dataset-fashion-mnist", capsys.readouterr().err)


def test_teacher_training_continues_from_a_model_folder(tiny_teacher_dir, tmp_path, monkeypatch):
    """`--method teacher --init DIR` starts from the folder's weights and TIRT logits (the shipped teacher's path)."""
    import numpy as np

    import demo.core.data
    from demo.core.models import load_model_folder
    from demo.distill import METHODS
    from demo.distill.__main__ import parse_args

    rng = np.random.default_rng(0)
    monkeypatch.setattr(
        demo.core.data,
        "load_fashion_mnist",
        lambda split: (rng.integers(0, 256, (8, 28, 28), dtype=np.uint8), rng.integers(0, 10, 8)),
    )
    args = parse_args(["--method", "teacher", "--init", str(tiny_teacher_dir), "--out", str(tmp_path), "--batch-size", "2"])
    method = METHODS["teacher"](args)
    start = load_model_folder(tiny_teacher_dir)
    assert all(torch.equal(a, b) for a, b in zip(method.student.state_dict().values(), start.net.state_dict().values()))
    assert torch.equal(method.tirt.lambda_t.detach(), start.tirt_logits)
    assert method.student.training and all(p.requires_grad for p in method.student.parameters())
    # the continuation's card names its start and describes itself, not the folder it started from
    from demo.distill.train import TrainConfig

    card = method.card(TrainConfig(iterations=30, batch_size=2, lr=3e-4))
    assert card.training["init"] == start.name and card.name == start.name  # no --name: the init's name
    assert card.description.startswith(f"{start.name} trained 30 iterations further")
    assert card.description != start.card.description


def _average_on_rank(rank: int, world: int, port: int, out) -> None:
    import torch.distributed as dist

    from demo.distill.train import _average_gradients

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    calls = []
    reduce = dist.all_reduce
    dist.all_reduce = lambda t, *a, **k: (calls.append(t.numel()), reduce(t, *a, **k))[1]
    params = [
        torch.nn.Parameter(torch.zeros(3, 2)),
        torch.nn.Parameter(torch.zeros(4)),
        torch.nn.Parameter(torch.zeros(2, dtype=torch.float64)),
    ]
    for i, p in enumerate(params):
        p.grad = torch.full_like(p, float(rank + 1) * (i + 1))
    _average_gradients(params, world)
    out.put((rank, calls, [p.grad.tolist() for p in params]))
    dist.destroy_process_group()


@pytest.mark.slow
def test_gradients_are_averaged_in_one_all_reduce_per_dtype():
    """Two CPU processes (gloo): every gradient becomes the mean over ranks, in one collective per flat buffer."""
    import torch.multiprocessing as mp
    from helpers import free_port

    ctx = mp.get_context("spawn")
    out, port = ctx.Queue(), free_port()
    procs = [ctx.Process(target=_average_on_rank, args=(r, 2, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    for _rank, calls, grads in results:
        assert sorted(calls) == [2, 10]  # float32: 6 + 4 elements in one buffer; float64: 2
        assert grads == [[[1.5] * 2] * 3, [3.0] * 4, [4.5] * 2]  # mean of (1, 2)·(i + 1)


def test_auto_precision_uses_bf16_only_where_the_cpu_has_bfloat16_instructions(monkeypatch, tmp_path):
    """Without AVX512-BF16/AMX a CPU emulates bf16 autocast, which trained ~10x slower than float32 here."""
    import demo.distill.train as tr

    cpu = torch.device("cpu")
    assert tr.resolve_precision("no", cpu) == "no" and tr.resolve_precision("bf16", cpu) == "bf16"
    for flags, expected in (
        ("fpu sse2 avx avx2 fma", "no"),
        ("fpu avx2 avx512f avx512_bf16", "bf16"),
        ("fpu avx2 amx_bf16 amx_tile", "bf16"),
    ):
        info = tmp_path / f"cpuinfo-{expected}-{len(flags)}"
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(tr, "Path", lambda p, info=info: info if p == "/proc/cpuinfo" else Path(p))
        assert tr.resolve_precision("auto", cpu) == expected, flags
    with pytest.raises(ValueError, match="mixed_precision must be one of auto, bf16, no"):
        tr.TrainConfig(mixed_precision="fp16")
