"""Domain errors shared by every layer; each carries the HTTP status the web layer turns it into."""


class ApprenticeError(Exception):
    """A clear, user-facing error. The message is shown as is; no traceback."""

    status: int = 400


class NotFound(ApprenticeError):
    status = 404


class Conflict(ApprenticeError):
    status = 409


class Forbidden(ApprenticeError):
    status = 403


class SchemaTooNew(ApprenticeError):
    status = 500


class SecondLook(Conflict):
    """An approval the teacher check flagged: it goes through only when the reviewer confirms it."""
