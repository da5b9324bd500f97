"""Using a trained model: the pipeline (:mod:`inference.pipeline`), novel views from one image
(``inference/infer.py``), evaluation against held-out pairs or renders (``inference/evaluate.py``, the protocol in
:mod:`inference.protocol`) and converting exports of the earlier format (``inference/upgrade.py``)."""
