"""Compare tab: teacher and student side by side from the same noise; the teacher streams its x0 preview per step."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import gradio as gr

from analysis.plots import plot_spectrum
from analysis.spectrum import HF_CUTOFF, high_frequency_share, radial_power_spectrum
from demo.app import lab
from demo.app.ui.context import IMAGE_DIR, IMAGE_MAX_AGE, PRESET_NOTE, conditioning, conditioning_view, prompt_boxes, shown_image
from demo.core.paths import REPO_ROOT
from demo.core.samplers import sampler_help
from demo.core.validate import model_nfe, whole

DOWNLOAD_DIR = IMAGE_DIR.parent / "gdl-downloads"


def compare(
    ctx,
    teacher,
    student,
    class_label,
    guidance,
    teacher_steps,
    student_steps,
    seed,
    sampler="ddim",
    n=1,
    guidance_interval="",
    clip_x0=False,
    prompt="",
    negative_prompt="",
    request: gr.Request = None,
):
    """Stream (teacher image, student image, summary, spectrum figure, download, code); the last yield holds the final
    results. Loading and warm-up are timed apart and shown on their own line; the speed-up is warm sampling only.
    Text-conditional models take `prompt` (one per line) and `negative_prompt` in place of the class label."""
    n = whole("batch size", n, 1, ctx.settings.max_batch)  # before any model loads
    ctx.wait_for_preload()  # a start-up warm-up still running would share the CPU with the timed runs
    (t_model, t_load), (s_model, s_load) = ctx.load_timed(teacher), ctx.load_timed(student)
    loads = {role: sec for role, sec in (("teacher", t_load), ("student", s_load)) if sec > 0}
    class_label, prompts = conditioning(t_model, class_label, prompt, negative_prompt)
    # Every setting is checked once, here, into the two models' sampling requests; the layers below trust them.
    t_req, s_req = lab.compare_request_pair(
        t_model,
        s_model,
        class_label,
        guidance,
        teacher_steps,
        student_steps,
        seed,
        sampler,
        n,
        interval=guidance_interval,
        clip_x0=clip_x0,
        **prompts,
    )
    ctx.check_work(
        n * (t_req.steps * model_nfe(t_model.card) + s_req.steps * model_nfe(s_model.card)),
        f"{n} images × (teacher + student steps × NFE per step)",
    )
    settings = {
        "teacher": t_model.name,
        "student": s_model.name,
        "class_label": str(class_label),
        "guidance": t_req.guidance,
        "teacher_steps": t_req.steps,
        "student_steps": s_req.steps,
        "seed": t_req.seed,
        "sampler": t_req.sampler,
        "n": n,
        "guidance_interval": guidance_interval or "",
        "clip_x0": t_req.clip_x0,
        **({"prompts": list(t_req.prompts), "negative_prompt": t_req.negative_prompt} if t_req.prompts else {}),
    }
    stop = ctx.stop_flag(request)
    try:
        events = lab.compare_requests(t_model, s_model, t_req, s_req, stop=stop)
        yield from _outputs(events, t_model, s_model, loads, settings)
    finally:
        ctx.release_stop(request, stop)


def _caption(model, steps: int, nfe: int) -> str:
    return f"{model.name} · {steps} step{'s' * (steps != 1)} · {nfe} NFE"


def _outputs(events, t_model, s_model, loads: dict, settings: dict):
    """Library events → (teacher image, student image, summary, figure, download, code) updates."""
    student_img, step = None, 0
    skip2 = (gr.skip(), gr.skip())
    for kind, value in events:
        if kind == "warm":
            yield gr.skip(), gr.skip(), "Warming up the models (first use at this batch size; not counted)…", gr.skip(), *skip2
        elif kind == "student":
            student_img = lab.display_grid(value.images)
            status = f"Student: {value.nfe} NFE in {value.seconds * 1000:.0f} ms. Teacher sampling…"
            yield (
                gr.skip(),
                shown_image(student_img, _caption(s_model, settings["student_steps"], value.nfe)),
                status,
                gr.skip(),
                *skip2,
            )
        elif kind == "step":
            step = value["i"] + 1
            status = f"Teacher step {value['i'] + 1}/{value['steps']} (t = {value['t']}): showing its x0 prediction."
            label = f"{t_model.name} · x0 prediction at step {step}/{value['steps']} (t = {value['t']})"
            yield (
                shown_image(lab.display_grid(value["x0"]), label),
                gr.skip(),
                status,
                gr.skip(),
                *skip2,
            )  # the student's image stays
        elif kind == "stopped":
            yield (
                gr.skip(),
                gr.skip(),
                f"Stopped after teacher step {step}; its last x0 preview stays on screen.",
                gr.skip(),
                *skip2,
            )
        else:
            teacher_img = lab.display_grid(value.teacher.images)
            record = {
                "settings": settings,
                "timings": {**value.summary(), "load_seconds": {k: round(v, 3) for k, v in loads.items()}},
            }
            yield (
                shown_image(teacher_img, _caption(t_model, settings["teacher_steps"], value.teacher.nfe)),
                shown_image(student_img, _caption(s_model, settings["student_steps"], value.student.nfe)),
                summary_markdown(value, t_model.name, s_model.name, loads),
                spectrum_figure(value),
                bundle({"teacher.png": teacher_img, "student.png": student_img}, record),
                code_for(settings, t_model, s_model),
            )


def summary_markdown(c, teacher_name: str, student_name: str, loads: dict | None = None) -> str:
    """Teacher and student as the table's two columns (four short rows fit a 390 px phone), the warm speed-up, and the
    one-off costs on their own line."""
    s = c.summary()
    repeats = f" The student's latency is the median of {s['student_runs']} runs." if s["student_runs"] > 1 else ""
    text = (
        f"| | teacher | student |\n|---|---|---|\n"
        f"| model | {teacher_name} | {student_name} |\n"
        f"| steps | {c.teacher_steps} | {c.student_steps} |\n"
        f"| NFE / image | {s['teacher_nfe']} | {s['student_nfe']} |\n"
        f"| latency | {s['teacher_seconds'] * 1000:.0f} ms | {s['student_seconds'] * 1000:.0f} ms |\n\n"
        f"**Speedup {s['speedup']:.1f}×** in warm sampling time ({s['nfe_ratio']:g}× fewer network evaluations).{repeats}"
    )
    one_off = [f"loading the {role} {sec:.1f} s" for role, sec in (loads or {}).items()]
    one_off += [f"warming up the {role} {sec:.2f} s" for role, sec in c.warmup_seconds.items()]
    if one_off:
        text += f"  \nFirst use, not counted above: {', '.join(one_off)}."
    return text


def spectrum_figure(c):
    spectra = {
        f"teacher (HF share {high_frequency_share(c.teacher.images):.3f})": radial_power_spectrum(c.teacher.images),
        f"student (HF share {high_frequency_share(c.student.images):.3f})": radial_power_spectrum(c.student.images),
    }
    return plot_spectrum(spectra, cutoff=HF_CUTOFF, title="Radial power spectrum of the outputs")


def bundle(images: dict, record: dict) -> str:
    """A zip of the shown images (PNG) and `settings.json` (settings and timings), beside the app's image folder."""
    import hashlib
    import io
    import json
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, img in images.items():
            if img is not None:
                png = io.BytesIO()
                img.save(png, format="PNG")
                z.writestr(name, png.getvalue())
        z.writestr("settings.json", json.dumps(record, indent=2))
    data = buf.getvalue()
    DOWNLOAD_DIR.mkdir(parents=True, exist_ok=True)
    for old in DOWNLOAD_DIR.glob("*.zip"):  # kept an hour, like the images
        if time.time() - old.stat().st_mtime > IMAGE_MAX_AGE:
            old.unlink(missing_ok=True)
    path = DOWNLOAD_DIR / f"compare-{hashlib.sha256(data).hexdigest()[:16]}.zip"
    path.write_bytes(data)
    return str(path)


def code_for(settings: dict, t_model, s_model) -> str:
    """The `python -m demo.sample` commands that produce the two images shown (same seed, same noise)."""
    extra = (f" --guidance-interval {settings['guidance_interval']}" if settings["guidance_interval"] else "") + (
        " --clip-x0" if settings["clip_x0"] else ""
    )
    if settings.get("prompts"):
        # `--flag=value`: a prompt that starts with "-" would otherwise read as an option
        extra += "".join(f" --prompt={shlex.quote(p)}" for p in settings["prompts"])
        extra += f" --negative-prompt={shlex.quote(settings['negative_prompt'])}" if settings["negative_prompt"] else ""
    lines = ["# the same images from the command line (ARCHITECTURE.md: demo.sample)"]
    for role, model, steps in (("teacher", t_model, settings["teacher_steps"]), ("student", s_model, settings["student_steps"])):
        lines.append(
            f"python -m demo.sample --model {_model_path(model)} --n {settings['n']} --class-label {settings['class_label']} "
            f"--steps {steps} --guidance {settings['guidance']:g} --sampler {settings['sampler']} --seed {settings['seed']}{extra} --out {role}.png"
        )
    return "\n".join(lines)


def _model_path(model) -> str:
    folder = getattr(model, "folder", None) or getattr(model, "path", None)
    if folder is None:
        return f"assets/models/{model.name}"
    try:
        return str(Path(folder).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(folder)


def stop_compare(ctx, request: gr.Request = None):
    """Stop this session's running comparison (the button also cancels the event in the browser)."""
    # The button also cancels the event, so no later message replaces this one: it must say the final state.
    return "Stopped; the last teacher preview stays on screen." if ctx.request_stop(request) else "Nothing is running."


def _student_steps(ctx, student, teacher_steps: int) -> int | None:
    """The student's distilled step count, or, for a model without one (a DASH-style compressed student samples like
    its teacher), `teacher_steps`; None for an unknown model. Read from card.json without importing model code."""
    try:
        steps = ctx.catalog.entry(student).steps
    except ValueError:
        return None
    return int(steps) if steps else teacher_steps


def student_defaults(ctx, student, teacher_steps=64):
    """(student steps, teacher) for a newly chosen student: the steps slider follows the student (`_student_steps`) and
    the teacher becomes the one its card names, so the pair compared is a student and the model it was distilled from;
    what cannot be read from the card (an unknown model, a teacher not in the catalog) is left as it is."""
    steps = _student_steps(ctx, student, lab.check_int("teacher steps", teacher_steps, 1, 250))
    teacher = ctx.teacher_of(student)
    return (gr.skip() if steps is None else steps), (gr.skip() if teacher is None else teacher)


def sampler_dropdown() -> gr.Dropdown:
    """The registered samplers (`demo.core.samplers.register`), each choice shown with its one line of help."""
    return gr.Dropdown([(f"{name}: {text}", name) for name, text in sampler_help().items()], value="ddim", label="Sampler")


LOOK_FOR = """
**What to look for.** Both models start from the same noise, so differences are the student's doing. A
step-distilled student (Meng et al., [arXiv 2210.03142](https://arxiv.org/abs/2210.03142)) should draw the same
garment in 1–8 steps; watch the fine texture (stripes, laces, knit) that goes first as steps shrink, and whether it
still follows W. The speed-up is warm sampling time: loading and first-call warm-up are timed apart and never counted.
A compact student such as DASH (Al Shafi et al., [arXiv 2606.00798](https://arxiv.org/abs/2606.00798)) takes as many
steps as its teacher and saves time per step instead.
"""

# The Compare inputs in order, by their query-string names (a text model's prompts included).
URL_KEYS = ("teacher", "student", "class", "w", "tsteps", "ssteps", "seed", "sampler", "n", "interval", "clip", "prompt", "neg")
# Runs in the browser before the event: mirrors the settings into the address bar (reload or share reproduces them);
# empty text and unticked boxes leave no parameter.
URL_JS = (
    "(...args) => { const keys = " + str(list(URL_KEYS)).replace("'", '"') + "; const u = new URL(window.location.href);"
    " keys.forEach((k, i) => { const v = args[i];"
    " if (v === null || v === undefined || v === '' || v === false) u.searchParams.delete(k); else u.searchParams.set(k, v); });"
    " window.history.replaceState(null, '', u); return args; }"
)


def from_url(ctx, request: gr.Request = None):
    """Compare settings from the page's query string (`?teacher=…&student=…&w=…`), each one left as it is when absent;
    values are checked when Compare runs, like typed ones."""
    params = dict(getattr(request, "query_params", None) or {})
    casts = {"w": float, "tsteps": int, "ssteps": int, "seed": int, "n": int, "clip": lambda v: v.lower() == "true"}
    out = []
    for key in URL_KEYS:
        value = params.get(key)
        if value is None:
            out.append(gr.skip())
            continue
        try:
            out.append(casts.get(key, str)(value))
        except ValueError:
            out.append(gr.skip())
    return tuple(out)


# The text preset's prompts: caption-grammar words the embedded text teacher was trained on (demo.core.captions).
TEXT_PRESET_PROMPTS = "a dark sandal\na light wide t-shirt\na patterned bag\nan ankle boot"


def presets(ctx) -> list[tuple[str, list]]:
    """(label, Compare inputs, every one of them in `URL_KEYS` order) for the telling comparisons whose models are
    installed, each resolved from the cards: a student and the teacher its card names. The inputs a preset does not
    set are at their defaults, so a click shows exactly what was precomputed."""
    out = []
    pd4 = ctx.default_model("student", steps=4, method="progressive")
    if pd4 and ctx.catalog.entry(pd4).steps == 4 and not ctx.is_text_model(pd4):
        out.append(("4-step student vs teacher", pd4, 2.0, 64, 4, 1, ""))
    pd1 = ctx.default_model("student", steps=1, method="progressive")
    if pd1 and ctx.catalog.entry(pd1).steps == 1 and not ctx.is_text_model(pd1):
        out.append(("1-step student vs teacher", pd1, 2.0, 64, 1, 1, ""))
    if ctx.has_method("dash"):
        dash = ctx.default_model("student", method="dash")
        out.append((f"DASH{_smaller(ctx, dash)} vs teacher at W = 5", dash, 5.0, 32, 32, 1, ""))
    if ctx.has_method("kd-cond"):
        out.append(("cond-only KD vs teacher at W = 5", ctx.default_model("student", method="kd-cond"), 5.0, 32, 32, 1, ""))
    text4 = _text_student(ctx, steps=4)
    if text4:
        out.append(("text: 4-step student vs teacher, four prompts", text4, 2.0, 64, 4, 4, TEXT_PRESET_PROMPTS))
    rows = []
    for label, student, w, t_steps, s_steps, n, prompt in out:
        teacher = ctx.teacher_of(student) or ctx.default_model("teacher")
        prompt = prompt or (TEXT_PRESET_PROMPTS if ctx.is_text_model(student) else "")  # a text model needs prompts
        rows.append((label, [teacher, student, "9", w, t_steps, s_steps, 0, "ddim", n, "", False, prompt, ""]))
    return rows


def _text_student(ctx, steps: int) -> str | None:
    """The first installed text-conditional student distilled for `steps` steps whose teacher is installed, else None."""
    for e in ctx.catalog.entries():
        if e.kind == "student" and e.steps == steps and ctx.is_text_model(e.name) and ctx.teacher_of(e.name):
            return e.name
    return None


def _smaller(ctx, student) -> str:
    """' (5.7x smaller)': the student's parameter count against its teacher's, from the cards; '' when unknown."""
    teacher = ctx.teacher_of(student)
    try:
        ratio = ctx.catalog.entry(teacher).card["parameters"] / ctx.catalog.entry(student).card["parameters"]
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return ""
    return f" ({ratio:.1f}x smaller)" if ratio > 1 else ""


def build(ctx) -> None:
    gr.Markdown(LOOK_FOR)
    with gr.Row():
        default_teacher, default_student = ctx.default_pair()
        teacher = ctx.model_dropdown("Teacher", default_teacher, info="a model folder name or a path inside the model roots")
        student = ctx.model_dropdown("Student", default_student)
        sampler = sampler_dropdown()
    with gr.Row():
        class_label = gr.Dropdown(ctx.class_choices(), value="0", label="Class", allow_custom_value=True)
        guidance = gr.Slider(0, 8, value=2.0, step=0.25, label="Guidance W", info="ε_u + W·(ε_c − ε_u)")
        seed = gr.Number(0, precision=0, label="Seed", minimum=0)
        n = gr.Radio([1, 4, 16, 64], value=1, label="Batch", info="images per model, shown as a grid")
    prompt_row, prompt, negative_prompt = prompt_boxes(visible=bool(default_teacher) and ctx.is_text_model(default_teacher))
    with gr.Row():
        teacher_steps = gr.Slider(1, 250, value=64, step=1, label="Teacher steps")
        student_steps = gr.Slider(
            1, 250, value=(student.value and _student_steps(ctx, student.value, 64)) or 4, step=1, label="Student steps"
        )
    with gr.Accordion("Guidance options", open=False):
        with gr.Row():
            guidance_interval = gr.Textbox(
                "",
                label="Guidance interval (timesteps LO,HI)",
                placeholder="e.g. 167,882 — empty: guidance at every step",
                info="W only for LO ≤ t ≤ HI, the conditional model elsewhere (Kynkäänniemi et al. 2024); "
                "167,882 is their EDM σ range 0.28–5.42 on this cosine schedule",
            )
            clip_x0 = gr.Checkbox(False, label="Clip x0", info="clamp each x0 prediction to [-1, 1] (static thresholding)")
    gr.Markdown(ctx.settings.budget_note(), elem_id="compare-budget")
    with gr.Row():
        run = gr.Button("Compare", variant="primary", elem_id="compare-button")
        stop = gr.Button("Stop", variant="stop")
    inputs = [teacher, student, class_label, guidance, teacher_steps, student_steps, seed, sampler, n, guidance_interval, clip_x0]
    inputs += [prompt, negative_prompt]
    rows = presets(ctx)  # next to the button, where a first-time visitor looks; wired once the outputs exist
    examples = (
        gr.Examples(
            [r[1] for r in rows], inputs, example_labels=[r[0] for r in rows], label=PRESET_NOTE, elem_id="compare-presets"
        )
        if rows
        else None
    )
    with gr.Row(equal_height=True):
        teacher_img = gr.Image(label="Teacher", type="pil", format="png", elem_id="teacher-image", height=472)
        student_img = gr.Image(label="Student", type="pil", format="png", elem_id="student-image", height=472)
    summary = gr.Markdown(
        "Choose two models and press **Compare** (or a preset): both start from the same noise.", elem_id="compare-summary"
    )
    spectrum = gr.Plot(label="Spectra")
    with gr.Accordion("Keep and share: download, code for this", open=False):
        gr.Markdown("The address bar holds the current settings after each run: reload or share it to reproduce the view.")
        download = gr.File(label="Images and settings.json (settings and timings)", elem_id="compare-download")
        code = gr.Code(label="Code for this", language="shell", elem_id="compare-code")

    outputs = [teacher_img, student_img, summary, spectrum, download, code]
    sampling = {"concurrency_limit": ctx.settings.concurrency, "concurrency_id": "sampling", "js": URL_JS}
    if examples is not None:
        ctx.register_presets(compare, examples, [r[1] for r in rows], inputs, outputs, api_name="compare_preset", **sampling)
    event = run.click(ctx.handler(compare, gpu=True), inputs, outputs, api_name="compare", **sampling)
    stop.click(ctx.handler(stop_compare), None, summary, cancels=[event], api_name="stop_compare", queue=False)
    teacher.change(
        ctx.handler(conditioning_view), [teacher], [class_label, prompt_row], api_name="conditioning_view", queue=False
    )
    student.change(
        ctx.handler(student_defaults),
        [student, teacher_steps],
        [student_steps, teacher],
        api_name="student_defaults",
        queue=False,
    )
    ctx.on_load.append((ctx.handler(from_url), inputs))  # every Compare input, in URL_KEYS order
