"""Error types whose message is meant for a person: one line, what went wrong and what to do.

Entry points catch :class:`InvsError` and print ``error: <message>`` with a non-zero exit instead of a traceback.
"""


class InvsError(Exception):
    """Base class: an error caused by input or environment, reported to the user in one line."""


class ConfigError(InvsError):
    """A configuration file or override is unreadable, has unknown keys or values of the wrong type."""


class StorageError(InvsError):
    """A URI is malformed, or reading/writing/listing it failed (missing bucket, credentials, network)."""


class ShardFormatError(InvsError):
    """A shard or sample does not follow the on-disk contract (missing member, wrong shape, bad key)."""
