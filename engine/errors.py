"""Error types. Every message names the problem and the fix, so the UI can show it as is."""


class EveInputError(ValueError):
    """Bad input from a user (a file, a folder, a model, a parameter)."""


class DatasetError(EveInputError):
    """A dataset folder, its `features.csv` or one of its volumes cannot be used."""
