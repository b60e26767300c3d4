"""Guided Distillation Lab — the web app (also the Hugging Face Space entry point).

`python app.py` serves on 127.0.0.1:7860 unless GRADIO_SERVER_NAME / GRADIO_SERVER_PORT say otherwise.
Settings come from `GDL_*` environment variables (see `demo.ui.context.AppSettings`); models load on first use, except
on ZeroGPU, where they are placed at start as its guidance says (`demo.space.place_models`).
"""

from __future__ import annotations

import os
import sys
import threading

if os.environ.get("SPACES_ZERO_GPU"):  # ZeroGPU: `spaces` must be imported before anything initialises CUDA
    import spaces  # noqa: F401

# A Space caches every gr.Examples row at launch unless told otherwise, running each preset's sampling before the app
# answers anyone; lazily, a row is cached on its first use instead (an explicit cache_mode still wins).
os.environ.setdefault("GRADIO_CACHE_MODE", "lazy")

from demo.space import fetch_hub_models, on_zero_gpu, place_models  # noqa: E402
from demo.ui import AppSettings, build_app, launch_kwargs  # noqa: E402


def _warm_imports() -> None:
    """Import diffusers in the background while the server starts, so the first request does not wait for it."""
    import demo.models  # noqa: F401


def main() -> None:
    try:
        fetch_hub_models()  # a Space written by `python -m demo.space` with pinned Hub names
        settings = AppSettings.from_env()
        app = build_app(settings)
        if on_zero_gpu():
            place_models(app.ctx.catalog)
    except ValueError as e:  # a bad GDL_* setting or an unreachable Hub model: one sentence, not a traceback
        sys.exit(f"error: {e}")
    app.queue(max_size=settings.queue_max_size, default_concurrency_limit=settings.concurrency)
    threading.Thread(target=_warm_imports, daemon=True).start()
    app.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        **launch_kwargs(),
    )


if __name__ == "__main__":
    main()
