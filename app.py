"""Guided Distillation Lab — the web app (also the Hugging Face Space entry point).

`python app.py` serves on 127.0.0.1:7860 unless GRADIO_SERVER_NAME / GRADIO_SERVER_PORT say otherwise.
Settings come from `GDL_*` environment variables (see `demo.ui.context.AppSettings`). The models the default
Compare view needs are loaded and warmed in the background while the server starts (`Context.preload`), so the
first comparison a visitor runs is timed on warm models; other models load on first use (`GDL_PRELOAD=0`: none).
"""

from __future__ import annotations

import os
import sys
import threading

from demo.ui import AppSettings, build_app, launch_kwargs


def _warm_imports() -> None:
    """Import diffusers in the background while the server starts, so the first request does not wait for it."""
    import demo.models  # noqa: F401


def _report(spent: dict) -> None:
    print("preloaded " + (", ".join(f"{name} ({sec:.1f} s)" for name, sec in spent.items()) or "nothing"), flush=True)


def main() -> None:
    settings = AppSettings.from_env()
    try:
        app = build_app(settings)
    except ValueError as e:  # a bad GDL_* setting: one sentence, not a traceback
        sys.exit(f"error: {e}")
    app.queue(max_size=settings.queue_max_size, default_concurrency_limit=settings.concurrency)
    if os.environ.get("GDL_PRELOAD", "1") != "0":
        app.ctx.start_preload(then=_report)  # imports diffusers, then loads and warms the default pair
    else:
        threading.Thread(target=_warm_imports, daemon=True).start()
    app.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        **launch_kwargs(),
    )


if __name__ == "__main__":
    main()
