"""Eve's model zoo: small CNNs and glass-box read-outs with known feature dependence.

`list_cards()` lists the built-in models, `load_model(name)` loads one (safetensors, never
pickle), `load_torchscript(file, spec)` loads and checks a user's TorchScript model.
Rebuild a built-in model with `python -m engine train-classifier NAME`.
"""

from engine.models.zoo import check_model, list_cards, load, load_model, load_torchscript, models_dir

__all__ = ["check_model", "list_cards", "load", "load_model", "load_torchscript", "models_dir"]
