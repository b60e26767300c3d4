"""Pure analysis: the Fashion-MNIST feature classifier, sample-quality metrics, branch gap, spectra,
projections and plotly figures. Nothing here imports gradio."""
