"""Guided Distillation Lab core: data, noise schedules, guidance, samplers, models and distillation methods.

Nothing under `demo/` except `demo/ui/` imports gradio.
"""
