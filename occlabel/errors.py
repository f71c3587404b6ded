"""User-facing errors: the CLI prints them as one line and exits with code 2 (no traceback)."""


class OccLabelError(Exception):
    """A mistake in the user's input or options (bad manifest, missing file, unknown model ...)."""


class DatasetError(OccLabelError):
    """A dataset cannot be read as described; the message names the scene, frame and field."""


class StoreError(OccLabelError):
    """A Zarr store is missing, of the wrong kind, or lacks what a stage needs."""


class SkippedItemsError(OccLabelError):
    """A run finished but skipped some items (bad images, ...): everything else is written. The CLI prints
    the message and exits with code 3; ``skipped`` lists (item, reason)."""

    exit_code = 3

    def __init__(self, message: str, skipped: list[tuple[str, str]]):
        super().__init__(message)
        self.skipped = skipped
