"""User-facing errors: the CLI prints them as one line and exits with code 2 (no traceback)."""


class OccLabelError(Exception):
    """A mistake in the user's input or options (bad manifest, missing file, unknown model ...)."""


class DatasetError(OccLabelError):
    """A dataset cannot be read as described; the message names the scene, frame and field."""


class StoreError(OccLabelError):
    """A Zarr store is missing, of the wrong kind, or lacks what a stage needs."""
