"""Equivalence with the ecosystem: our DDIM loop matches diffusers' DDIMScheduler on the same UNet and noise.

Only step counts that divide T = 1000 are compared: diffusers' `DDIMScheduler.step` jumps to
`prev_t = t − T // N`, which is the next *trailing* timestep only when N divides T (for N = 64 the trailing grid
has gaps of 15 and 16, while diffusers always steps 15). Our sampler steps along the grid itself.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler

from demo.core.guidance import CFGDenoiser
from demo.core.samplers import initial_noise, sample_ddim

pytestmark = pytest.mark.slow  # subprocesses, servers, training or many samples: not in `-m "not slow"`


def diffusers_ddim(model, z, labels, steps: int, W: float) -> torch.Tensor:
    """The textbook diffusers loop: scheduler.set_timesteps, UNet output (CFG on the raw output), scheduler.step."""
    sched = DDIMScheduler.from_config(
        model.scheduler_config,
        timestep_spacing="trailing",
        set_alpha_to_one=True,
        prediction_type="v_prediction",
        clip_sample=False,
    )
    sched.set_timesteps(steps)
    null = torch.full_like(labels, model.null_class)
    with torch.no_grad():
        for t in sched.timesteps:
            out = model.net(z, t, class_labels=labels).sample
            if W != 1.0:
                out_u = model.net(z, t, class_labels=null).sample
                out = out_u + W * (out - out_u)
            z = sched.step(out, t, z, eta=0.0).prev_sample
    return z


@pytest.mark.parametrize("steps", [10, 50])
@pytest.mark.parametrize("W", [1.0, 2.0])
def test_sample_ddim_matches_diffusers_ddim_scheduler(tiny_teacher, steps, W):
    assert tiny_teacher.prediction_type == "v_prediction"
    labels = torch.tensor([0, 4, 9])
    z_T = initial_noise(7, 3, (1, 28, 28))
    ours = sample_ddim(CFGDenoiser(tiny_teacher, labels, W), z_T, steps, tiny_teacher.schedule)
    theirs = diffusers_ddim(tiny_teacher, z_T, labels, steps, W)
    assert float(theirs.std()) > 0.1  # a real image-sized output, not a degenerate one
    assert float((ours - theirs).abs().max()) < 1e-4
