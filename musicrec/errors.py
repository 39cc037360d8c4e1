"""User-facing errors: every failure a user can fix carries where it happened and what to do."""

from __future__ import annotations


class Skipped(Exception):
    """Raised by a model's fit when it does not apply to the data (e.g. a catalogue too large for a dense
    item x item model, or a rating table too large to export): the pipeline records the reason as the model's
    leaderboard note, not a failure. Either family raises it."""


class MusicrecError(Exception):
    """Base for errors shown to users as one clear message (no traceback unless --debug)."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        self.message = message
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return f"{self.message}\n  what to do: {self.hint}" if self.hint else self.message


class DataError(MusicrecError):
    """An input file cannot be read or parsed: names the file and, where known, the line."""

    def __init__(self, path: object, problem: str, *, line: int | None = None, hint: str = "") -> None:
        self.path = str(path)
        self.line = line
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}", hint=hint)


class ValidationFailed(MusicrecError):
    """The data broke one or more expectations of a suite; training must not start."""

    def __init__(self, suite: str, failures: list[dict[str, object]], source: str = "") -> None:
        self.suite = suite
        self.failures = failures
        self.source = source
        where = f" in {source}" if source else ""
        lines = [
            f"data validation failed{where}: suite '{suite}' (expectations/{suite}.json), "
            f"{len(failures)} expectation(s) broken"
        ]
        for f in failures:
            lines.append(f"  - {f['expectation']}: {f.get('detail', '')}")
            if f.get("examples"):
                lines.append(f"      e.g. {f['examples']}")
        hints = list(dict.fromkeys(str(f["hint"]) for f in failures if f.get("hint")))
        hint = "; ".join(hints) if hints else "fix or drop the offending rows in the input and run again"
        super().__init__("\n".join(lines), hint=hint)


class StoreError(MusicrecError):
    """The object store is unreachable, incomplete or holds something that fails verification."""


class ConflictError(StoreError):
    """A conditional write lost a race: someone else changed the object first."""


class UsageError(MusicrecError):
    """A command-line argument that cannot work; nothing has been started."""


class ConfigError(MusicrecError):
    """An override that the model cannot take (unknown model or key, wrong type, out of range)."""
