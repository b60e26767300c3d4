"""Guided Distillation Lab. Layers (ARCHITECTURE.md): `demo.core` (the library), `demo.distill` (training),
`demo.app` (the web app); the modules here are commands and integrations (`python -m demo.sample`, `demo.half`,
`demo.pipeline`, `demo.space`). Nothing under `demo/` except `demo/app/ui/` imports gradio.
"""
