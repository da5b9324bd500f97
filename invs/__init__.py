"""iNVS shared core: cameras, geometry, storage URIs, shard formats, parquet tables and configuration.

Every stage package (``render``, ``preprocess``, ``train``) builds on this one; no module here imports a stage
except :mod:`invs.pipeline`, which chains them.
"""

__version__ = "0.1.0"
