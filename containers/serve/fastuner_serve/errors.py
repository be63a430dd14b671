"""The server's two kinds of expected failure; anything else is a bug (HTTP 500, or a traceback)."""

from __future__ import annotations

# Exit codes of a failed start (documented in containers/serve/README.md).
EXIT_USAGE = 2
EXIT_BASE_MODEL = 3
EXIT_ADAPTER = 4
EXIT_PORT = 5


class StartupError(Exception):
    """The server cannot start: one line for stderr and a non-zero exit code."""

    def __init__(self, message: str, *, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class ApiError(Exception):
    """A client-visible error: HTTP status, a stable snake_case code and a message saying what to do."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"error": self.message, "code": self.code}


def unknown_adapter(name: str) -> ApiError:
    return ApiError(404, "unknown_adapter", f"adapter '{name}' is not registered (GET /adapters lists them)")
