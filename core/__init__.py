"""GenLab core: models, losses, training and sampling. Never imports Gradio."""
