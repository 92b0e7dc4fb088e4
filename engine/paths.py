"""Where Eve's files are: one home for the repository root and the committed assets (`EVE_MODELS_DIR` and
`EVE_DATA_DIR` move the model zoo and the built datasets: `engine.models.zoo`, `engine.data.defaults`)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
ASSETS = REPO_ROOT / "assets"
MODEL_ASSETS = ASSETS / "models"
DIFFUSION_ASSETS = ASSETS / "diffusion"
