"""Contract tests over the method registry, and the identities each distillation method rests on."""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from demo.core.data import BatchSampler
from demo.core.models import Card, load_model_folder, save_model_folder, teacher_unet
from demo.core.schedule import ddim_step
from demo.distill import METHODS
from demo.distill.dash import VARIANTS, DashDistillation
from demo.distill.guided import GuidanceUNet, GuidedDistillation
from demo.distill.hd import HDRefinement, TokenDiscriminator, dmd_loss
from demo.distill.progressive import ProgressiveRound, ddim_target
from demo.distill.train import TrainConfig, auxiliary_step, list_checkpoints, train

TEACHER_METHODS = {"teacher", "text-teacher"}  # train from data; every other method distils a --teacher
DISTILL_METHODS = sorted(set(METHODS) - TEACHER_METHODS)


def tiny_data(batch_size=2, n=16, seed=0):
    rng = np.random.default_rng(seed)
    return BatchSampler(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n), batch_size)


@pytest.fixture(scope="module")
def tiny_guided_dir(tiny_teacher, tmp_path_factory):
    """A w-conditioned one-step student folder built from the tiny teacher (no training)."""
    net = GuidanceUNet.from_teacher(tiny_teacher.net)
    card = Card(name="tiny-guided", kind="student", method="guided", teacher=tiny_teacher.name, steps=1, w_conditioned=True)
    from diffusers import DDPMScheduler

    return save_model_folder(
        tmp_path_factory.mktemp("m") / "tiny-guided", net, DDPMScheduler.from_config(tiny_teacher.scheduler_config), card
    )


def build(name, teacher, guided_dir):
    """Every registered distillation method on tiny models (the DASH student shrunk to keep tests fast)."""
    data = tiny_data()
    if name in VARIANTS:
        small = teacher_unet(channels=(8, 16), layers_per_block=1, attention=False)
        return DashDistillation(teacher, data, variant=name, student=small)
    if name == "guided":
        return GuidedDistillation(teacher, data, 1.0, 5.0)
    if name == "guided-single-w":
        return GuidedDistillation(teacher, data, fixed_w=2.0)
    if name == "progressive":
        return ProgressiveRound(load_model_folder(guided_dir), data, 2)
    pooling = {"hd": "awd", "hd-gap": "gap", "dmd": None}[name]
    return HDRefinement(teacher, load_model_folder(guided_dir), data, pooling)


@pytest.mark.parametrize("name", DISTILL_METHODS)
def test_loss_finite_and_gradients_reach_only_the_student(name, tiny_teacher, tiny_guided_dir):
    method = build(name, tiny_teacher, tiny_guided_dir)
    g = torch.Generator().manual_seed(0)
    aux_stats = auxiliary_step(method, 0, g)  # HD's fake-score updates (the loop runs them first); nothing for others
    loss, stats = method.loss(0, g)
    stats = {**aux_stats, **stats}
    assert torch.isfinite(loss) and all(np.isfinite(v) for v in stats.values())
    for p in method.student.parameters():
        p.grad = None
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.student.parameters())
    for module in method.frozen_modules().values():
        assert all(p.grad is None for p in module.parameters()), f"{name}: a frozen module received gradients"


@pytest.mark.parametrize("name", DISTILL_METHODS)
@pytest.mark.slow
def test_two_iteration_run_writes_checkpoint_stats_and_model(name, tiny_teacher, tiny_guided_dir, tmp_path):
    method = build(name, tiny_teacher, tiny_guided_dir)
    train(
        method, TrainConfig(iterations=2, batch_size=2, warmup=1, log_every=1, checkpoint_every=2, mixed_precision="no"), tmp_path
    )
    assert list_checkpoints(tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert rows[-1].get("event") == "done" and any(r.get("step") == 2 and "loss" in r for r in rows)
    model = load_model_folder(tmp_path / "model")
    assert model.card.kind == "student" and model.card.teacher == tiny_teacher.name


def test_every_registered_method_builds_from_cli_arguments(tiny_teacher_dir, tiny_guided_dir, tmp_path, monkeypatch):
    """The CLI builders (real data loading replaced by a tiny IDX-free sampler)."""
    import demo.distill as registry
    from demo.distill.__main__ import parse_args

    monkeypatch.setattr(registry, "_train_data", lambda args: tiny_data())
    for name in DISTILL_METHODS:
        if name in VARIANTS:
            continue  # the full-size DASH student is exercised by test_dash_student_is_compact
        teacher = str(tiny_guided_dir) if name == "progressive" else str(tiny_teacher_dir)
        argv = ["--method", name, "--teacher", teacher, "--out", str(tmp_path / "unused"), "--batch-size", "2", "--steps", "2"]
        if name in ("hd", "hd-gap", "dmd"):
            argv += ["--init", str(tiny_guided_dir)]
        method = METHODS[name](parse_args(argv))
        assert method.student is not None and isinstance(method, METHODS[name].cls)


def test_registry_entries_describe_themselves_and_flags_are_declared_by_their_methods():
    """Every name has a description (the card's and --help's) and a family summary (the app's dropdown text); a
    method's flags come from its own file: dropping a family from the registry drops its flags from the CLI."""
    import argparse as ap

    from demo.app.ui.distill import METHOD_INFO
    from demo.distill import add_method_arguments, method_summary
    from demo.distill.hd import HDRefinement

    assert set(METHODS) == {*TEACHER_METHODS, "guided", "guided-single-w", "progressive", "hd", "hd-gap", "dmd", *VARIANTS}
    for name, entry in METHODS.items():
        assert entry.name == name and entry.description and entry.cls.summary, name
    assert not any(METHODS[n].needs_teacher for n in TEACHER_METHODS) and all(METHODS[n].needs_teacher for n in DISTILL_METHODS)
    assert sorted(METHOD_INFO.split(" · ")) == sorted(method_summary().split(" · ")) and "hd, hd-gap, dmd" in METHOD_INFO
    p = ap.ArgumentParser()
    add_method_arguments(p)
    flags = {o for a in p._actions for o in a.option_strings}
    assert {"--w-min", "--w-max", "--guidance", "--steps", "--channels", "--fake-updates", "--adv-weight", "--d-weight"} <= flags
    p = ap.ArgumentParser()
    HDRefinement.add_arguments(registry_arguments(p))
    assert {o for a in p._actions for o in a.option_strings} == {
        "-h",
        "--help",
        "--w-min",
        "--w-max",
        "--fake-warmup",
        "--fake-updates",
        "--adv-weight",
        "--d-weight",
    }


def registry_arguments(parser):
    from demo.distill import MethodArguments

    return MethodArguments(parser, parser, [])


def test_a_flag_two_methods_declare_differently_is_refused_and_a_name_registered_twice_too():
    import argparse as ap

    from demo.distill import MethodArguments, register
    from demo.distill.base import Method

    p = ap.ArgumentParser()
    args = MethodArguments(p, p, [])
    args.add_argument("--w-min", type=float, default=1.0)
    args.add_argument("--w-min", type=float, default=1.0)  # the same declaration: shared
    with pytest.raises(ValueError, match="declared twice"):
        args.add_argument("--w-min", type=float, default=0.0)

    class Clash(Method):
        cli = {"dash": "another dash"}

    with pytest.raises(ValueError, match="registered twice"):
        register(Clash)


def test_dash_student_is_compact_plain_diffusers_model():
    from demo.core.models import count_parameters
    from demo.distill.dash import compact_student

    student = compact_student(Card(name="t"))
    ratio = count_parameters(teacher_unet()) / count_parameters(student)
    assert type(student).__name__ == "UNet2DModel" and student.config.num_class_embeds == 11
    assert ratio >= 5.5, ratio


def test_dash_terms_vanish_when_student_equals_teacher(tiny_teacher):
    import copy

    method = DashDistillation(tiny_teacher, tiny_data(4), "dash", student=copy.deepcopy(tiny_teacher.net))
    _, stats = method.loss(0, torch.Generator().manual_seed(0))
    assert stats["l_im"] < 1e-10 and stats["l_un"] < 1e-10 and stats["l_an"] > 0
    other = DashDistillation(
        tiny_teacher, tiny_data(4), "dash", student=teacher_unet(channels=(8, 16), layers_per_block=1, attention=False)
    )
    _, stats = other.loss(0, torch.Generator().manual_seed(0))
    assert stats["l_im"] > 1e-6 and stats["l_un"] > 1e-6


def test_dash_tirt_weights_are_transferred_and_frozen(tiny_teacher):
    method = DashDistillation(
        tiny_teacher, tiny_data(4), "dash", student=teacher_unet(channels=(8, 16), layers_per_block=1, attention=False)
    )
    assert torch.equal(method.tirt.lambda_t, tiny_teacher.tirt_logits)
    assert not method.tirt.lambda_t.requires_grad
    loss, _ = method.loss(0, torch.Generator().manual_seed(0))
    loss.backward()
    assert method.tirt.lambda_t.grad is None
    assert all(p is not method.tirt.lambda_t for g in method.param_groups(1e-3, 0) for p in g["params"])
    t = torch.tensor([10, 500, 990])
    assert torch.allclose(method.weights(t).mean(), torch.tensor(1.0))


def test_guided_student_starts_as_the_teachers_conditional_model(tiny_teacher):
    student = GuidanceUNet.from_teacher(tiny_teacher.net)
    z, t, y = torch.randn(3, 1, 28, 28), torch.tensor([3, 400, 999]), torch.tensor([0, 5, 9])
    with torch.no_grad():
        a = tiny_teacher.net(z, t, class_labels=y).sample
        b = student(z, t, class_labels=y, guidance=torch.tensor([1.0, 2.0, 7.0])).sample
    assert torch.allclose(a, b, atol=1e-6)


def test_x_tilde_identity_one_student_step_lands_on_two_teacher_steps():
    """One DDIM step z_t → z_t'' with x̂ = x̃ reproduces the two teacher steps z_t → z_t' → z_t'' exactly."""
    from demo.core.schedule import NoiseSchedule

    sched = NoiseSchedule.cosine()
    g = torch.Generator().manual_seed(0)
    z_t = torch.randn(4, 1, 8, 8, generator=g)
    t, t1, t2 = 800, 600, 400
    a = {k: sched.alpha_sigma(k) for k in (t, t1, t2)}
    x_a, x_b = torch.randn(4, 1, 8, 8, generator=g), torch.randn(4, 1, 8, 8, generator=g)  # two different teacher x̂
    z_1 = ddim_step(z_t, x_a, *a[t], *a[t1])
    z_2 = ddim_step(z_1, x_b, *a[t1], *a[t2])
    x_tilde = ddim_target(z_t, z_2, *a[t], *a[t2])
    assert torch.allclose(ddim_step(z_t, x_tilde, *a[t], *a[t2]), z_2, atol=1e-5)


def test_dmd_gradient_is_zero_when_fake_and_real_scores_agree():
    x = torch.randn(3, 1, 8, 8, requires_grad=True)
    x0 = torch.randn(3, 1, 8, 8)
    dmd_loss(x, x0, x0).backward()
    assert torch.count_nonzero(x.grad) == 0
    x.grad = None
    dmd_loss(x, x0 + 0.1, x0).backward()
    assert x.grad.abs().sum() > 0


def test_dmd_gradient_is_zero_for_a_fake_score_equal_to_the_teacher_at_w1(tiny_teacher, tiny_guided_dir):
    """With the fake score an untouched copy of the teacher and W = 1, real and fake x0 agree: no DMD gradient."""
    method = HDRefinement(tiny_teacher, load_model_folder(tiny_guided_dir), tiny_data(), None, w_min=1.0, w_max=1.0)
    x = torch.randn(2, 1, 28, 28)
    x_t = tiny_teacher.schedule.add_noise(x, torch.randn_like(x), torch.tensor([300, 700]))
    t, y, w = torch.tensor([300, 700]), torch.tensor([1, 2]), torch.ones(2)
    with torch.no_grad():
        x0_real = method.x0_real(x_t, t, y, w)
        from demo.core.schedule import to_x0

        alpha, sigma = tiny_teacher.schedule.alpha_sigma(t)
        x0_fake = to_x0(x_t, method.fake_out(x_t, t, y, w), alpha, sigma, tiny_teacher.prediction_type)
    xg = x.clone().requires_grad_(True)
    dmd_loss(xg, x0_fake, x0_real).backward()
    assert xg.grad.abs().max() < 1e-5


def test_hd_fake_warmup_trains_the_fake_score_and_leaves_the_generator(tiny_teacher, tiny_guided_dir):
    """During the fake-score warm-up the generator's loss carries no gradient; the W-conditioned fake score moves."""
    method = HDRefinement(tiny_teacher, load_model_folder(tiny_guided_dir), tiny_data(), "awd", fake_warmup=1)
    fake_before = [p.detach().clone() for p in method.fake.parameters()]
    g = torch.Generator().manual_seed(0)
    auxiliary_step(method, 0, g)  # the loop's fake-score updates
    loss, stats = method.loss(0, g)
    loss.backward()
    assert all(p.grad is None for p in method.student.parameters()) and stats["l_dmd"] == 0.0
    assert any(not torch.equal(a, b) for a, b in zip(fake_before, method.fake.parameters()))
    g = torch.Generator().manual_seed(1)
    auxiliary_step(method, 1, g)
    loss, _ = method.loss(1, g)  # after the warm-up the generator learns
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.student.parameters())
    z, t, y = torch.randn(2, 1, 28, 28), torch.tensor([300, 700]), torch.tensor([1, 2])
    with torch.no_grad():  # the fake score tells W apart once it has trained on W-dependent samples
        assert not torch.allclose(
            method.fake_out(z, t, y, torch.full((2,), 1.0)), method.fake_out(z, t, y, torch.full((2,), 5.0))
        )


def test_dmd_from_the_teachers_weights_starts_as_the_teachers_one_step_prediction(tiny_teacher, tiny_teacher_dir):
    """DMD-only's generator may start from the teacher itself: its first one-step sample is the teacher's x0 at t = T−1."""
    method = HDRefinement(tiny_teacher, load_model_folder(tiny_teacher_dir), tiny_data(), None)
    z, y = torch.randn(2, 1, 28, 28), torch.tensor([3, 7])
    T = tiny_teacher.schedule.num_train_timesteps
    with torch.no_grad():
        expected = tiny_teacher.x0(z, torch.full((2,), T - 1), y)
        assert torch.allclose(method.generate(z, y, torch.full((2,), 3.0)), expected, atol=1e-5)
    student = load_model_folder(tiny_teacher_dir)
    student.card.kind = "student"  # a student that takes no W cannot be refined
    with pytest.raises(ValueError, match="w-conditioned"):
        HDRefinement(tiny_teacher, student, tiny_data(), None)


def test_awd_weights_are_an_input_dependent_distribution_over_tokens():
    torch.manual_seed(0)
    disc = TokenDiscriminator(16, "awd")
    f1, f2 = torch.randn(2, 16, 7, 7), torch.randn(2, 16, 7, 7)
    w1, w2 = disc.token_weights(f1), disc.token_weights(f2)
    assert w1.shape == (2, 49) and torch.all(w1 >= 0)
    assert torch.allclose(w1.sum(1), torch.ones(2), atol=1e-6)
    assert not torch.allclose(w1, w2)
    gap = TokenDiscriminator(16, "gap").token_weights(f1)
    assert torch.allclose(gap, torch.full_like(gap, 1 / 49))


def test_hd_cli_options_reach_the_method_and_bad_values_are_one_sentence(capsys, tiny_teacher_dir, tiny_guided_dir, monkeypatch):
    """`--adv-weight` and `--fake-updates` set the refinement's budget split; nonsense is refused before training."""
    import demo.distill as registry
    from demo.distill.__main__ import parse_args

    monkeypatch.setattr(registry, "_train_data", lambda args: tiny_data())
    argv = ["--method", "hd", "--teacher", str(tiny_teacher_dir), "--init", str(tiny_guided_dir), "--out", "unused"]
    method = METHODS["hd"](parse_args(argv + ["--adv-weight", "0.05", "--fake-updates", "3"]))
    assert (method.adv_weight, method.fake_updates) == (0.05, 3)
    default = METHODS["hd"](parse_args(argv))
    assert (default.adv_weight, default.d_weight, default.fake_updates) == (3e-3, 1e-2, 2)  # DMD2's weights
    assert METHODS["hd"](parse_args(argv + ["--d-weight", "0.5"])).d_weight == 0.5
    for flag, value in (("--fake-updates", "0"), ("--adv-weight", "-1"), ("--d-weight", "nan")):
        with pytest.raises(SystemExit) as info:  # the flag's type refuses it: argparse's one error line, exit code 2
            parse_args(argv + [flag, value])
        assert info.value.code == 2 and flag in capsys.readouterr().err.strip().splitlines()[-1]
    with pytest.raises(ValueError, match="fake_updates must be at least 1"):  # the method still checks its own arguments
        METHODS["hd"](argparse.Namespace(**{**vars(parse_args(argv)), "fake_updates": 0}))


def test_w_student_under_a_guidance_interval_is_given_w_1_outside_it(tiny_guided_dir):
    from demo.core.guidance import make_denoiser
    from demo.core.samplers import initial_noise

    student = load_model_folder(tiny_guided_dir)
    with torch.no_grad():  # the W branch starts at zero (the teacher's conditional model): give W an effect
        last = student.net.unet.class_embedding.w_mlp[-1]
        last.weight.copy_(torch.randn(last.weight.shape, generator=torch.Generator().manual_seed(0)))
    z, labels = initial_noise(0, 2, (1, 28, 28)), torch.tensor([3, 4])
    w1, w3 = (student.x0(z, torch.full((2,), 500), labels, guidance=torch.full((2,), w)) for w in (1.0, 3.0))
    assert not torch.allclose(w1, w3)
    d = make_denoiser(student, labels, 3.0, interval=(300, 700))
    for t, w in ((900, 1.0), (500, 3.0), (100, 1.0)):
        expected = student.x0(z, torch.full((2,), t), labels, guidance=torch.full((2,), w))
        torch.testing.assert_close(d(z, t), expected)
    assert d.evaluations == 3  # one NFE per call, inside the interval or not


class _RecordingNet(torch.nn.Module):
    """Returns zeros and records the class labels it was called with (to read what a loss feeds the student)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.labels = net, []

    def forward(self, sample, timestep, class_labels=None, **kw):
        self.labels.append(class_labels.detach().clone())
        return self.net(sample, timestep, class_labels=class_labels, **kw)


@pytest.mark.slow
def test_kd_cond_trains_the_null_branch_on_conditional_targets_by_label_dropout(tiny_teacher):
    """The faithful cond-only baseline: ~10% of the student's L_im labels are ∅ while the teacher is asked for
    T(z_t, y); the untrained-null ablation never shows the student ∅ in a loss term."""
    from diffusers.models.unets.unet_2d import UNet2DOutput  # noqa: F401  (the recorded net returns diffusers' output)

    data = tiny_data(batch_size=200, n=400)
    null = tiny_teacher.null_class
    for variant, expect_drop in (("kd-cond", True), ("kd-cond-untrained-null", False)):
        student = _RecordingNet(teacher_unet(channels=(8, 16), layers_per_block=1, attention=False))
        method = DashDistillation(tiny_teacher, data, variant, student=student)
        loss, stats = method.loss(0, torch.Generator().manual_seed(0))
        labels = student.labels[-1]
        cond = labels[: labels.shape[0] // 2]  # [2B]: the L_im half, then the ∅ half (used by no kd-cond term)
        share = float((cond == null).float().mean())
        assert stats["l_un"] == 0.0 and stats["l_an"] == 0.0
        if expect_drop:
            assert 0.04 < share < 0.18, share  # p = 0.1 over 200 draws
        else:
            assert share == 0.0
        # The null half of the student's pass enters no loss term: its gradient reaches only through dropped rows.
        emb = student.net.class_embedding.weight
        emb.grad = None
        loss.backward()
        null_grad = float(emb.grad[null].abs().sum())
        assert (null_grad > 0) == expect_drop, (variant, null_grad)


@pytest.mark.slow
def test_kd_cond_with_dropout_learns_the_null_branch_as_the_class_average():
    """On hand-made targets: with conditional targets under label dropout the optimal ∅ output is the mean of the
    conditional targets (what the null branch of the paper's cond-only student learns)."""
    torch.manual_seed(0)
    targets = torch.tensor([1.0, 3.0, 8.0])  # T(z, y) for three classes, at one fixed (z, t)
    out = torch.zeros(4, requires_grad=True)  # a student that is a table: out[y], out[3] = ∅
    opt = torch.optim.SGD([out], lr=0.05)
    g = torch.Generator().manual_seed(0)
    for _ in range(3000):
        y = torch.randint(0, 3, (64,), generator=g)
        y_s = torch.where(torch.rand(64, generator=g) < 0.1, torch.full_like(y, 3), y)
        loss = (out[y_s] - targets[y]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.allclose(out.detach()[:3], targets, atol=0.2)
    assert abs(float(out.detach()[3]) - float(targets.mean())) < 0.5


def test_ddim_leading_starts_below_pure_noise_as_dashs_protocol():
    from demo.core.samplers import sample
    from demo.core.schedule import NoiseSchedule

    schedule = NoiseSchedule.cosine()
    seen = []
    model = SimpleNamespace(schedule=schedule)
    sample(
        "ddim-leading",
        lambda z, t: torch.zeros_like(z),
        torch.randn(1, 1, 4, 4),
        50,
        model.schedule,
        callback=lambda d: seen.append(d["t"]),
    )
    assert seen[0] == 980 and seen[-1] == 0 and len(seen) == 50
    seen.clear()
    sample(
        "ddim",
        lambda z, t: torch.zeros_like(z),
        torch.randn(1, 1, 4, 4),
        50,
        model.schedule,
        callback=lambda d: seen.append(d["t"]),
    )
    assert seen[0] == 999


@pytest.mark.slow
def test_hd_discriminator_loss_weight_and_token_entropy(tiny_teacher, tiny_guided_dir):
    """The discriminator enters the fake score's update with DMD2's 1e-2; AWD logs its token-weight entropy."""
    from demo.distill.hd import D_WEIGHT, weight_entropy

    assert D_WEIGHT == 1e-2
    u = torch.full((2, 49), 1 / 49)
    one = torch.zeros(2, 49)
    one[:, 3] = 1
    assert torch.allclose(weight_entropy(u), torch.ones(2)) and torch.allclose(weight_entropy(one), torch.zeros(2), atol=1e-6)
    method = HDRefinement(tiny_teacher, load_model_folder(tiny_guided_dir), tiny_data(), "awd")
    stats = auxiliary_step(method, 0, torch.Generator().manual_seed(0))
    assert 0 < stats["token_entropy"] <= 1
    gap = HDRefinement(tiny_teacher, load_model_folder(tiny_guided_dir), tiny_data(), "gap")
    stats = auxiliary_step(gap, 0, torch.Generator().manual_seed(0))
    assert stats["token_entropy"] == pytest.approx(1.0)
    # The discriminator's gradient in the fake-score update scales with d_weight (same seed, same first update;
    # the aux clip at 10 does not bind on these tiny models, so the ratio is the weights' ratio).
    grads = []
    for d_weight in (1.0, 1e-2):
        torch.manual_seed(0)
        m = HDRefinement(tiny_teacher, load_model_folder(tiny_guided_dir), tiny_data(), "awd", d_weight=d_weight, fake_updates=1)
        auxiliary_step(m, 0, torch.Generator().manual_seed(0))
        grads.append(torch.cat([p.grad.flatten() for p in m.disc.parameters() if p.grad is not None]))
    assert torch.allclose(grads[1], grads[0] * 1e-2, rtol=1e-3, atol=1e-9)


@pytest.mark.slow
def test_hd_fake_score_optimizer_is_checkpointed_and_restored(tiny_teacher, tiny_guided_dir, tmp_path):
    """The fake-score/discriminator optimiser lives in the checkpoint: a resumed run continues its Adam moments."""
    from safetensors.torch import load_file

    def run(iterations):
        method = HDRefinement(tiny_teacher, load_model_folder(tiny_guided_dir), tiny_data(), "awd", fake_updates=1)
        train(
            method,
            TrainConfig(iterations=iterations, batch_size=2, warmup=1, log_every=1, checkpoint_every=1, mixed_precision="no"),
            tmp_path,
        )
        return method

    first = run(1)
    ckpt = list_checkpoints(tmp_path)[-1]
    meta = json.loads((ckpt / "meta.json").read_text())
    assert "fake" in meta["aux_optimizers"]
    tensors = load_file(str(ckpt / "state.safetensors"))
    saved = {k: v for k, v in tensors.items() if k.startswith("aux_fake.")}
    assert saved and any(k.endswith("exp_avg") for k in saved)
    step_state = first.auxiliary_optimizers()["fake"].state_dict()["state"]
    assert all(float(s["step"]) == 1 for s in step_state.values())
    resumed = run(2)
    assert all(
        float(s["step"]) == 2 for s in resumed.auxiliary_optimizers()["fake"].state_dict()["state"].values()
    )  # 1 restored + 1 new
    maps = load_file(str(tmp_path / "model" / "discriminator_maps.safetensors"))
    assert maps["token_weights"].shape[0] == maps["images"].shape[0] and torch.allclose(
        maps["token_weights"].flatten(1).sum(1), torch.ones(maps["images"].shape[0]), atol=1e-5
    )


def test_the_loop_averages_and_clips_hds_fake_score_gradients_across_processes(tiny_teacher, tiny_guided_dir, monkeypatch):
    """HD's second optimiser is the loop's: each fake-score update's gradients go through the loop's all-reduce
    (here recorded in place of torch.distributed) before its clip and step."""
    import demo.distill.train as loop

    method = HDRefinement(tiny_teacher, load_model_folder(tiny_guided_dir), tiny_data(), "awd", fake_updates=2)
    synced = []
    monkeypatch.setattr(loop, "_average_gradients", lambda params, world: synced.append((len(params), world)))
    before = [p.detach().clone() for p in method.disc.parameters()]
    auxiliary_step(method, 0, torch.Generator().manual_seed(0), world=2)
    aux_params = {id(p) for p in [*method.fake.parameters(), *method.disc.parameters()]}
    assert len(synced) == 2 and all(world == 2 and 0 < n <= len(aux_params) for n, world in synced)
    assert any(not torch.equal(a, b) for a, b in zip(before, method.disc.parameters()))
    assert all(p.grad is None for p in method.student.parameters())  # the generator is not touched by these updates


def test_the_static_method_catalog_matches_the_registry():
    """The Distill tab lists methods read from the method files' source (no import of the model stack at the app's
    build); it must name exactly what the imported registry holds, with the same family summaries."""
    from demo.distill import METHODS, method_catalog, method_summary

    names, summary = method_catalog()
    assert names == sorted(METHODS)
    assert sorted(summary.split(" · ")) == sorted(method_summary().split(" · "))
