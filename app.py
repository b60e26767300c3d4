"""Guided Distillation Lab — the web app (also the Hugging Face Space entry point).

`python app.py` serves on 127.0.0.1:7860 unless GRADIO_SERVER_NAME / GRADIO_SERVER_PORT say otherwise.
Settings come from `GDL_*` environment variables (see `demo.app.ui.context.AppSettings`). The models the default
Compare view needs are loaded and warmed in the background while the server starts (`Context.preload`), so the
first comparison a visitor runs is timed on warm models; then the presets' first results are computed whenever no
request is running (`Context.precompute`), so a preset answers at once; other models load on first use
(`GDL_PRELOAD=0`: none of this).
On ZeroGPU, models are placed at start as its guidance says (`demo.space.place_models`).
"""

from __future__ import annotations

import os
import sys
import threading

if os.environ.get("SPACES_ZERO_GPU"):  # ZeroGPU: `spaces` must be imported before anything initialises CUDA
    import spaces  # noqa: F401

# A Space caches every gr.Examples row that has a function at launch unless told otherwise, sampling before the app
# answers anyone. The presets here have none (their results are precomputed in the background, `Context.precompute`);
# lazily is the safe default should one get a function (an explicit cache_mode still wins).
os.environ.setdefault("GRADIO_CACHE_MODE", "lazy")

from demo.core.validate import env_int, show  # noqa: E402  (no gradio: it reads GRADIO_SERVER_PORT at import and fails on a bad one)


def _warm_imports() -> None:
    """Import diffusers in the background while the server starts, so the first request does not wait for it."""
    import demo.core.models  # noqa: F401


def server_address() -> tuple[str, int]:
    """GRADIO_SERVER_NAME and GRADIO_SERVER_PORT, checked before anything starts."""
    name = os.environ.get("GRADIO_SERVER_NAME", "").strip() or "127.0.0.1"
    if len(name) > 253 or not all(c.isalnum() or c in ".-:[]" for c in name):
        raise ValueError(f"GRADIO_SERVER_NAME must be a host name or IP address, got {show(name)}")
    return name, env_int("GRADIO_SERVER_PORT", 7860, 1, 65535)


def _report(spent: dict) -> None:
    print("preloaded " + (", ".join(f"{name} ({sec:.1f} s)" for name, sec in spent.items()) or "nothing"), flush=True)


def _report_presets(spent: dict) -> None:
    print(f"precomputed {len(spent)} presets ({sum(spent.values()):.1f} s)", flush=True)


def main() -> None:
    try:  # a bad setting or an unreachable Hub model is one sentence naming what is wrong, not a traceback
        server_name, server_port = server_address()
        from demo.app.ui import AppSettings, build_app, launch_kwargs
        from demo.space import fetch_hub_models, on_zero_gpu, place_models

        fetch_hub_models()  # a Space written by `python -m demo.space` with pinned Hub names
        settings = AppSettings.from_env()
        app = build_app(settings)
        if on_zero_gpu():
            place_models(app.ctx.catalog)
    except ValueError as e:
        sys.exit(f"error: {e}")
    app.queue(max_size=settings.queue_max_size, default_concurrency_limit=settings.concurrency)
    if os.environ.get("GDL_PRELOAD", "1") != "0":
        app.ctx.start_preload(then=_report, presets_done=_report_presets)  # diffusers, the default pair, then the presets
    else:
        threading.Thread(target=_warm_imports, daemon=True).start()
    try:
        app.launch(
            server_name=server_name,
            server_port=server_port,
            max_file_size=int(settings.max_upload_mb * 2**20),  # /gradio_api/upload refuses anything larger
            **launch_kwargs(),
        )
    except OSError as e:  # the port is taken, or the name does not resolve
        sys.exit(
            f"error: cannot serve on {server_name}:{server_port} ({e.strerror or e}); set GRADIO_SERVER_NAME / GRADIO_SERVER_PORT."
        )


if __name__ == "__main__":
    main()
