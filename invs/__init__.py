"""iNVS shared core: cameras, geometry, storage URIs, shard formats, parquet tables and configuration.

Every stage package (``render``, ``preprocess``, ``train``) builds on this one; nothing here imports a stage.
"""

__version__ = "0.1.0"
