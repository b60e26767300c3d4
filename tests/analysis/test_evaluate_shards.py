"""Sharded evaluation (issue 8): each process samples a contiguous slice of the run's sample indices from the run's
own noise and labels, features are gathered on rank 0, and the metrics equal a single-process run's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import torch

from analysis.evaluate import evaluate_model, evaluate_sharded, generate_shard, shard_bounds
from demo.core.generate import generate
from demo.core.paths import REPO_ROOT

REPO = REPO_ROOT  # demo.core.paths: the one definition of the repository's folders


@pytest.mark.parametrize("world", [1, 2, 3, 5])
@pytest.mark.parametrize("n", [0, 1, 7, 10, 13])
def test_shards_cover_every_index_once_in_order_and_balanced(n, world):
    bounds = [shard_bounds(n, r, world) for r in range(world)]
    assert [i for lo, hi in bounds for i in range(lo, hi)] == list(range(n))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_shard_bounds_rejects_a_bad_rank():
    with pytest.raises(ValueError, match="rank"):
        shard_bounds(10, 2, 2)


def test_shards_reproduce_a_single_process_run(tiny_teacher):
    full = generate(tiny_teacher, n=5, class_label="all", steps=2, guidance=2.0, sampler="ddim", seed=3)
    parts = [generate_shard(tiny_teacher, 5, "all", 2, 2.0, "ddim", 3, 256, rank, 2) for rank in range(2)]
    assert [len(p.labels) for p in parts] == [3, 2]
    assert torch.equal(torch.cat([p.labels for p in parts]), full.labels)
    assert torch.allclose(torch.cat([p.images for p in parts]), full.images, atol=1e-6)


def test_gathered_features_give_the_single_process_metrics(tiny_latent):
    """Two ranks simulated in one process: rank 1 hands its features to rank 0's gather."""
    sent = []
    assert evaluate_sharded(tiny_latent, 12, 2, 2.0, "ddim", 0, "all", 256, 1, 2, lambda obj: sent.append(obj)) is None
    row = evaluate_sharded(tiny_latent, 12, 2, 2.0, "ddim", 0, "all", 256, 0, 2, lambda obj: [obj, *sent])
    single = evaluate_model(tiny_latent, n=12, steps=2, guidance=2.0, sampler="ddim", seed=0)
    assert row["processes"] == 2 and row["nfe"] == single["nfe"]
    for key in ("frechet_distance", "accuracy", "precision", "recall"):
        assert row[key] == pytest.approx(single[key], rel=1e-4, abs=1e-6), key


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not installed")
@pytest.mark.slow
def test_torchrun_two_cpu_processes_print_one_row(tiny_teacher_dir, tiny_teacher):
    """A real 2-process run on CPU (gloo). `--num-samples` is `--n`: torchrun's own parser rejects `--n` as ambiguous."""
    from helpers import free_port

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        "torchrun",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "analysis.evaluate",
        "--model",
        str(tiny_teacher_dir),
        "--num-samples",
        "12",
        "--steps",
        "2",
        "--guidance",
        "2",
        "--device",
        "cpu",
        "--json",
    ]
    result = subprocess.run(cmd, cwd=REPO, env=env, check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 1 and rows[0]["processes"] == 2  # rank 0 alone prints
    single = evaluate_model(tiny_teacher, n=12, steps=2, guidance=2.0, sampler="ddim", seed=0)
    assert rows[0]["frechet_distance"] == pytest.approx(single["frechet_distance"], rel=1e-4)


def test_the_accelerate_config_example_is_two_gpu_processes():
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(REPO / "configs" / "accelerate-2gpu.yaml"))
    assert config.num_processes == 2 and config.distributed_type.value == "MULTI_GPU" and config.num_machines == 1


def test_each_nccl_rank_gathers_on_its_own_gpu(monkeypatch):
    """On GPUs the gather binds the process to cuda:LOCAL_RANK before NCCL starts (a stand-in for CUDA and NCCL on CPU)."""
    import torch.distributed as dist

    from analysis.evaluate import _distributed_gather

    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: calls.append(("init", backend)))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    rank, world, _ = _distributed_gather()
    assert (rank, world) == (1, 2) and calls == [("set_device", 1), ("init", "nccl")]
