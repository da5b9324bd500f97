"""iNVS shared core: cameras, geometry, storage URIs, shard formats, parquet tables and configuration.

Every stage package (``render``, ``preprocess``, ``train``) builds on this one; no module here imports a stage
(the whole-run driver that chains them is :mod:`infra.run_all`).
"""

__version__ = "0.1.0"
