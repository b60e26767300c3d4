"""The library: noise schedules, denoisers and the guidance convention, samplers, sampling requests, model folders and
their on-disk formats, data. It imports neither gradio nor the training, app or analysis layers (ARCHITECTURE.md)."""
