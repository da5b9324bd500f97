"""Train stage: fine-tune a Stable Diffusion inpainting UNet on pair shards with Ray Train (``train/run.py``)."""
