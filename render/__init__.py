"""Render stage: 3D objects -> multi-view RGBA + planar depth + cameras in render shards (``render/main.py``)."""
