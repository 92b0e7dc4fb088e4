"""Error types, and how a caught exception's text goes into one. Every message names the problem and
the fix, so the UI can show it as is (tests/test_messages.py walks every one)."""

REASON_CHARS = 200  # an exception's text in a message: enough to name the cause, never a whole traceback


class EveInputError(ValueError):
    """Bad input from a user (a file, a folder, a model, a parameter)."""


class DatasetError(EveInputError):
    """A dataset folder, its `features.csv` or one of its volumes cannot be used."""


def reason(exc: BaseException, *, typed: bool = False) -> str:
    """`exc`'s text for the "(...)" of a message: on one line (nibabel's and ITK's span several; of a
    TorchScript error, its last line, the original error after the interpreter's traceback), at most
    `REASON_CHARS` long, and never empty: an exception without text gives its type's name. `typed`
    puts the type's name first ("KeyError: 'x'") unless the text already does."""
    text = str(exc).strip()
    if "Traceback of TorchScript" in text:
        text = text.splitlines()[-1]
    text = " ".join(text.split())
    if len(text) > REASON_CHARS:
        text = text[: REASON_CHARS - 1] + "…"
    name = type(exc).__name__
    if not text:
        return name
    return f"{name}: {text}" if typed and not text.startswith(f"{name}:") else text
