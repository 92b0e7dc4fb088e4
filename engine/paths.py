"""Where Eve's files are: one home for the repository root and the committed assets (`EVE_MODELS_DIR` and
`EVE_DATA_DIR` move the model zoo and the built datasets: `engine.models.zoo`, `engine.data.defaults`)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
ASSETS = REPO_ROOT / "assets"
MODEL_ASSETS = ASSETS / "models"
DIFFUSION_ASSETS = ASSETS / "diffusion"


def output_path(path: str | Path, suffixes: tuple[str, ...] = ()) -> Path:
    """The one rule for where a command writes (`--out`): a path ending in one of `suffixes` (any when none),
    its folder created when missing; refused with the fix otherwise."""
    from engine.errors import EveInputError

    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise EveInputError(f"--out {path} is not a {' or '.join(suffixes)} file: give a path ending in {suffixes[0]}.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EveInputError(
            f"Cannot create folder {path.parent} ({exc.strerror or type(exc).__name__}): choose a writable --out path."
        ) from exc
    return path
