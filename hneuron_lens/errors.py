"""One exception hierarchy for every error a user can cause or fix.

Every user error is an :class:`HNeuronLensError`: it says what went wrong, where (file, line,
field, when known) and what to do. The CLI prints it as one line,
``error: <what> (<file>:<line> <field>): <what to do>``, and exits with code 2; any other exception
is a bug (exit code 1, traceback with ``-v``).

Subclasses name the stage: :class:`DataError` (input files and records), :class:`StoreError`
(activation stores), :class:`ProbeError` (saved probes, fitting), :class:`ModelError` (models and
their hooks), :class:`DependencyError` (an installed package behaves outside the supported range),
:class:`OutputError` (an output path that would replace or escape what the command did not
create), :class:`UsageError` (a bad option value) and :class:`RemoteError` (an LLM endpoint).
They keep the built-in base (``ValueError`` / ``RuntimeError``) that older code caught.

The text never spans lines: :meth:`HNeuronLensError.__str__` joins line breaks with ``"; "`` so
the CLI's message stays one line however long the list inside it.
"""

from __future__ import annotations

import os


class HNeuronLensError(Exception):
    """A user error: what went wrong, where, and what to do.

    Args:
        what: the problem, in one sentence.
        file: the file it is in (a path), if any.
        line: 1-based line number in ``file``, if known.
        field: the record field or option at fault, if known.
        hint: what to do about it.

    Example:
        >>> str(HNeuronLensError("no 'question' field", file="qa.jsonl", line=3,
        ...                      field="question", hint="check the format"))
        "no 'question' field (qa.jsonl:3 question): check the format"
    """

    def __init__(
        self,
        what: str,
        *,
        file: str | os.PathLike[str] | None = None,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.what = what
        self.file = None if file is None else str(file)
        self.line = line
        self.field = field
        self.hint = hint
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file + (f":{self.line}" if self.line is not None else "")
        if self.field:
            where = f"{where} {self.field}".strip()
        text = self.what + (f" ({where})" if where else "")
        text += f": {self.hint}" if self.hint else ""
        return "; ".join(part.strip() for part in text.splitlines() if part.strip())

    def __str__(self) -> str:
        return self._render()

    def __reduce__(self) -> tuple[object, ...]:
        # subclasses have other constructor signatures: rebuild from the attributes
        return (_restore, (type(self), dict(self.__dict__)))


def _restore(cls: type[HNeuronLensError], state: dict[str, object]) -> HNeuronLensError:
    err = cls.__new__(cls)
    err.__dict__.update(state)
    Exception.__init__(err, err._render())
    return err


class DataError(HNeuronLensError, ValueError):
    """An input file or record is missing, unreadable, empty or malformed."""


class StoreError(HNeuronLensError, RuntimeError):
    """An activation store is missing, damaged, busy or does not match the request."""


class ProbeError(HNeuronLensError, ValueError):
    """A saved probe is unreadable, or a probe cannot be fitted / applied as asked."""


class ModelError(HNeuronLensError, ValueError):
    """A model cannot be loaded or lacks what the analysis needs (hooks, dense MLPs)."""


class DependencyError(HNeuronLensError, RuntimeError):
    """An installed package (TransformerLens, transformers...) behaves outside what we support."""


class OutputError(HNeuronLensError, FileExistsError):
    """An output path would overwrite or escape something the command did not create."""


class UsageError(HNeuronLensError, ValueError):
    """An option or argument value is invalid (a config field, a CLI flag, a name)."""


class RemoteError(HNeuronLensError, RuntimeError):
    """An LLM endpoint failed after its retries, refused a request or answered malformed data."""
