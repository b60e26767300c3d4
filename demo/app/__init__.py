"""The web app: the model catalog, background distillation jobs, the experiments the tabs run (`lab`) and the gradio
tabs (`ui`). Only `demo.app.ui` imports gradio (ARCHITECTURE.md)."""
