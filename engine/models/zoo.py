"""Eve's model zoo: model cards, built-in models and user TorchScript models.

A model card (`engine.cards.ModelCard`) is a JSON file next to the weights in
`assets/models/` (written by `python -m engine train-classifier NAME`): what a model sees
(`spec`), computes (`output_names`, `function`) and where it came from (`dataset`,
`training`, `command`). `load(ref)` loads what a `ModelRef` names, built-in or TorchScript.

Loading never unpickles: built-in weights are safetensors; a user's model is TorchScript
(`torch.jit.load`), checked on a dummy batch before Eve uses it, within a wall-clock limit; an uploaded one is
checked first in a child process that is killed past that limit or a memory limit (`screen`; the limits are
`engine.data.uploads.ModelLimits`). What Python cannot bound: a TorchScript forward runs in C++ (it releases
the GIL, so other sessions keep running, but no thread can be stopped), so a check past its limit is refused
while its thread runs on to its end in the background; and a model's forwards on real data run unbounded.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from engine.cards import TORCHSCRIPT, ModelCard, ModelRef, spec_from_json, spec_to_json
from engine.data.slicing import SliceSpec
from engine.data.uploads import ModelLimits
from engine.devices import model_device, placed, resolve_device
from engine.errors import EveInputError, reason
from engine.models import xtrain
from engine.models.architectures import ARCHITECTURES, Probability
from engine.paths import MODEL_ASSETS

MAX_TORCHSCRIPT_BYTES = 200 * 1024 * 1024  # uploads larger than this are refused
CHECK_BATCH = 2  # dummy batch size for the signature check
SCREEN_START_S = 60.0  # the checking child's own start (Python, torch, the model file), on top of the check's limit
DEVICES = ("cpu", "cuda")  # where a model's outputs may be (a 'meta' tensor holds no values)


def models_dir() -> Path:
    """Where cards and weights live (`EVE_MODELS_DIR` overrides `assets/models/`)."""
    return Path(os.environ.get("EVE_MODELS_DIR", MODEL_ASSETS))


def read_card(path: Path) -> ModelCard:
    """The card in a zoo JSON file (raises `EveInputError` naming the rebuild command)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nested deeper than Python's stack
        raise EveInputError(
            f"Model card {path} is not readable JSON ({reason(exc)}): rebuild it with "
            f"`python -m engine train-classifier {path.stem}`."
        ) from exc
    return ModelCard.from_json(data, source=path)


def list_cards(folder: str | Path | None = None) -> list[ModelCard]:
    """Every model card in the zoo, sorted by name."""
    folder = models_dir() if folder is None else Path(folder)
    return sorted((read_card(path) for path in folder.glob("*.json")), key=lambda card: card.name)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def contrasting_model(card: ModelCard, others: list[ModelCard]) -> str | None:
    """The model to set beside `card` by default: among `others` of the same task, the one whose target
    depends on the most different features (a shortcut model beside a diagnosis one), then by name."""
    if not others:
        return None
    mine = set(card.depends_on)

    def distance(other: ModelCard) -> tuple:
        return (other.task != card.task, -len(mine ^ set(other.depends_on)), other.name)

    return min(others, key=distance).name


def build_model(architecture: dict, name: str) -> nn.Module:
    """A card's architecture ({class, kwargs}) with fresh (untrained) weights; `name` for messages."""
    arch = architecture
    if arch["class"] not in ARCHITECTURES:
        raise EveInputError(
            f"Model card {name!r} names an unknown architecture {arch['class']!r}: "
            f"use one of {', '.join(ARCHITECTURES)}."
        )
    return ARCHITECTURES[arch["class"]](**arch.get("kwargs", {}))


def load_model(
    name: str, device: str | torch.device | None = None, *, folder: str | Path | None = None
) -> tuple[nn.Module, ModelCard]:
    """A built-in model in eval mode and its card.

    Args:
        name: a card name (see `list_cards()`).
        device: where to put the model (`engine.devices.resolve_device`: default CUDA when present).
        folder: the zoo folder (default `models_dir()`).

    Raises `EveInputError` for an unknown name, a missing or altered weights file.
    """
    folder = models_dir() if folder is None else Path(folder)
    path = folder / f"{name}.json"
    if not path.is_file():
        names = [c.name for c in list_cards(folder)]
        raise EveInputError(f"Unknown model {name!r}: choose one of {', '.join(names) or '(none built)'}.")
    card = read_card(path)
    model = build_model(card.architecture, card.name)
    rebuild = f"rebuild it with `{card.command or f'python -m engine train-classifier {name}'}`"
    if card.weights:
        weights = folder / card.weights
        if not weights.is_file():
            raise EveInputError(f"Weights {weights} of model {name!r} are missing: {rebuild}.")
        if card.weights_sha256 and file_sha256(weights) != card.weights_sha256:
            raise EveInputError(f"Weights {weights} do not match model card {name!r} (checksum differs): {rebuild}.")
        state = load_file(weights)  # safetensors: tensors only, nothing executed
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise EveInputError(
                f"Weights {weights} do not fit the architecture of {name!r} ({reason(exc)}): {rebuild}."
            ) from exc
    model = model.to(resolve_device(device))
    return model.eval(), card


@torch.inference_mode()
def forward(model, images: torch.Tensor) -> torch.Tensor:
    """The model's outputs on one batch of images (B, 1, S, S), run on the model's device: a (B, K)
    float32 tensor on the CPU; a (B,) output is read as (B, 1). Anything else raises `EveInputError`."""
    out = model(placed(model, images))
    if not isinstance(out, torch.Tensor) or out.ndim not in (1, 2) or out.shape[0] != len(images):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise EveInputError(
            f"The model returned {shape} for a batch of {len(images)} images: it must return one (B, K) tensor."
        )
    _check_where_and_how_many(out, len(images), ModelLimits.from_env())
    return out.reshape(len(images), -1).float().cpu()


def _describe(out) -> str:
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)} and dtype {out.dtype}"
    return f"a {type(out).__name__}"


def _check_where_and_how_many(out: torch.Tensor, batch: int, limits: ModelLimits) -> None:
    """Refuse outputs on no real device ('meta' holds no values) and more than `limits.outputs` per image,
    before anything reads or copies them (a 0-stride `expand` claims terabytes it does not hold)."""
    if out.device.type not in DEVICES:
        raise EveInputError(
            f"The model returned its outputs on the {out.device.type!r} device, which holds no values Eve can read: "
            "make the model return them on the device of its input (cpu or cuda), e.g. without .to('meta')."
        )
    per_image = out.numel() // max(batch, 1)
    if per_image > limits.outputs:
        raise EveInputError(
            f"The model returned {per_image:,} outputs per image, over Eve's limit of {limits.outputs:,} "
            f"(EVE_MODEL_MAX_OUTPUTS): make it return the class scores (B, K) only."
        )


class ModelTooSlow(EveInputError):
    """A model's check on a dummy batch ran past `ModelLimits.check_s`."""


CHECK_THREAD = "eve-model-check"  # the name of `_within`'s threads


def model_checks_running() -> list[threading.Thread]:
    """The model checks still running in this process (past their limit, a check's thread runs on)."""
    return [t for t in threading.enumerate() if t.name == CHECK_THREAD]


def wait_for_model_checks(timeout_s: float = 60) -> None:
    """Let the model checks still running end (at most `timeout_s` each): the interpreter must not exit under one
    (torch's C++ would abort the process, exit status 134)."""
    for thread in model_checks_running():
        thread.join(timeout_s)


def _within(seconds: float, run):
    """`run()` in a thread of its own, its result or its exception; `TimeoutError` past `seconds` (the thread
    is left to finish on its own: Python cannot stop it; a TorchScript forward releases the GIL meanwhile)."""
    done: dict = {}

    def target():
        try:
            with torch.no_grad():  # grad mode is per thread
                done["value"] = run()
        except BaseException as exc:  # handed to the caller
            done["error"] = exc

    thread = threading.Thread(target=target, name=CHECK_THREAD, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(seconds)
    if "error" in done:
        raise done.pop("error")
    return done["value"]


def check_model(
    model, spec: SliceSpec, *, n_outputs: int | None = None, device=None, limits: ModelLimits | None = None
) -> int:
    """Run `model` on a dummy batch at `spec` and check Eve's contract; return K.

    The contract: (B, 1, S, S) float32 — (B, 1, S, S, S) for a volume input — → a (B,) or (B, K)
    float32 tensor of finite values on the cpu or cuda, at most `limits.outputs` per image, each image's
    output independent of the rest of the batch. The dummy batch is uniform in [0, 1]; the two forwards
    must end within `limits.check_s` seconds (default `ModelLimits.from_env()`).
    """
    limits = ModelLimits.from_env() if limits is None else limits
    device = model_device(model) if device is None else torch.device(device)
    generator = torch.Generator().manual_seed(0)
    batch = torch.rand(CHECK_BATCH, *spec.shape, generator=generator).to(device)
    axes = ", ".join(map(str, spec.shape))
    shape = f"a ({CHECK_BATCH}, {axes}) float32 batch"
    what = "volumes" if spec.is_volume else "images"
    try:
        out, single = _within(limits.check_s, lambda: (model(batch), model(batch[:1])))
    except TimeoutError:
        raise ModelTooSlow(
            f"The model took longer than {limits.check_s:g} s on {shape} (Eve's limit, EVE_MODEL_CHECK_S): "
            "export a model that answers in seconds on CPU, or run it locally (python -m engine score --model FILE)."
        ) from None
    except Exception as exc:  # any failure inside user code
        raise EveInputError(
            f"The model failed on {shape} ({reason(exc, typed=True)}): "
            f"it must take {what} shaped (B, {axes}); export it for this input, or correct the model card's "
            "input (kind, size)."
        ) from exc
    if not isinstance(out, torch.Tensor):
        raise EveInputError(
            f"The model returned {_describe(out)} on {shape}: it must return one (B, K) tensor (not a tuple or dict)."
        )
    if out.dtype != torch.float32:
        raise EveInputError(f"The model returned {_describe(out)}: it must return float32 outputs (add .float()).")
    _check_where_and_how_many(out, CHECK_BATCH, limits)
    if out.ndim not in (1, 2) or out.shape[0] != CHECK_BATCH:
        raise EveInputError(
            f"The model returned {_describe(out)} on {shape}: it must return (B,) or (B, K) = "
            f"({CHECK_BATCH},) or ({CHECK_BATCH}, K), one row per image; if it takes other input than {what} "
            f"shaped (B, {axes}), correct the model card's input (kind, size)."
        )
    if not isinstance(single, torch.Tensor) or single.numel() * CHECK_BATCH != out.numel():
        raise EveInputError(
            f"The model returned {_describe(out)} for {CHECK_BATCH} images but {_describe(single)} for one: it must "
            "return one row per image, whatever the batch size (no batch-size-dependent branches)."
        )
    _check_where_and_how_many(single, 1, limits)
    out, single = out.reshape(CHECK_BATCH, -1), single.reshape(1, -1)  # (B,) is one output: (B, 1)
    if out.shape[1] < 1:
        raise EveInputError("The model returned zero outputs per image: it must return at least one (K ≥ 1).")
    if n_outputs is not None and out.shape[1] != n_outputs:
        raise EveInputError(
            f"The model returned {out.shape[1]} outputs per image but {n_outputs} output names "
            "were given: give one name per output."
        )
    if not torch.isfinite(out).all():
        raise EveInputError(
            f"The model returned NaN or Inf on {shape}: fix the model so that its outputs are "
            "finite for images in [0, 1]."
        )
    if not torch.allclose(single.to(out.device, out.dtype), out[:1], rtol=1e-4, atol=1e-5):
        raise EveInputError(
            "The model's output for an image changes with the rest of the batch: put it in eval "
            "mode (model.eval(), e.g. for BatchNorm/Dropout) before exporting."
        )
    return int(out.shape[1])


class NotTorchScript(EveInputError):
    """A file `torch.jit.load` cannot load."""


def not_torchscript(source: str, error: str) -> NotTorchScript:
    """The refusal of a file that is not TorchScript; `error` names what torch raised."""
    return NotTorchScript(
        f"{source} is not a TorchScript model ({error or 'RuntimeError'}): Eve never unpickles files, so a "
        "`torch.save(model)` checkpoint or state_dict cannot be used; export with "
        "`torch.jit.save(torch.jit.script(model.eval()), 'model.pt')`."
    )


def load_torchscript(
    path_or_bytes: str | Path | bytes,
    spec: SliceSpec,
    *,
    output_names: list[str] | None = None,
    name: str = "user model",
    device=None,
    limits: ModelLimits | None = None,
) -> tuple[torch.jit.ScriptModule, ModelCard]:
    """Load a user's TorchScript model (never unpickled) and check it on a dummy batch.

    Args:
        path_or_bytes: a file path or the file's bytes (e.g. an upload), saved with
            `torch.jit.save(torch.jit.script(model), path)` or `torch.jit.trace`.
        spec: the input the model expects (`SliceSpec`).
        output_names: one name per output column (default `output_0`, ...).
        name: a display name for the card.
        device: where to put the model (`engine.devices.resolve_device`: default CUDA when present).
        limits: the check's limits (default `ModelLimits.from_env()`).

    Returns (model in eval mode, its `ModelCard`). Raises `EveInputError` naming what does not fit.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data, source = bytes(path_or_bytes), "the uploaded file"
    else:
        path = Path(path_or_bytes)
        if not path.is_file():
            raise EveInputError(f"Model file {path} does not exist: check the path.")
        if path.stat().st_size > MAX_TORCHSCRIPT_BYTES:
            raise EveInputError(
                f"Model file {path} is larger than {MAX_TORCHSCRIPT_BYTES // 2**20} MB: use a smaller model."
            )
        data, source = path.read_bytes(), str(path)
    if len(data) > MAX_TORCHSCRIPT_BYTES:
        raise EveInputError(f"{source} is larger than {MAX_TORCHSCRIPT_BYTES // 2**20} MB: use a smaller model.")
    if not data:
        raise EveInputError(f"{source} is empty: upload a TorchScript model file.")
    device = resolve_device(device)
    try:
        model = torch.jit.load(io.BytesIO(data), map_location=device)
    except Exception as exc:  # torch raises RuntimeError/ValueError for non-TorchScript archives
        raise not_torchscript(source, type(exc).__name__) from exc
    model.eval()
    n_outputs = None if output_names is None else len(output_names)
    k = check_model(model, spec, n_outputs=n_outputs, device=device, limits=limits)
    names = list(output_names) if output_names is not None else [f"output_{i}" for i in range(k)]
    card = ModelCard(
        name=name,
        kind=TORCHSCRIPT,
        spec=spec,
        output_names=tuple(names),
        architecture={"class": "TorchScript", "kwargs": {}},
        description=f"User TorchScript model from {source}.",
        sha256=hashlib.sha256(data).hexdigest(),
    )
    return model, card


# The child that checks an uploaded model (`screen`): its memory is capped before torch is imported.
_SCREEN = (
    "import resource, sys; limit = int(float(sys.argv[1]) * 2**20); "
    "resource.setrlimit(resource.RLIMIT_DATA, (limit, limit)) if limit else None; "
    "from engine.models.zoo import screen_child; screen_child(sys.argv[2:])"
)
SCREEN_REFUSED = 3  # the child's exit status for a model the check refused (its message on stderr's last line)
SCREEN_SLOW = 4  # the child's exit status for a model whose check ran past its limit
SCREEN_NOT_TORCHSCRIPT = 5  # ... for a file torch.jit.load refused (what it raised on stdout)


def screen(
    path: str | Path,
    spec: SliceSpec,
    *,
    output_names=None,
    device=None,
    limits: ModelLimits | None = None,
) -> None:
    """Check a TorchScript file as `load_torchscript` does, in a child process: killed past `limits.check_s`
    (plus `SCREEN_START_S` for its start), its data segment capped at `limits.check_mb` on the CPU (a CUDA
    context needs more address space than any cap would leave: none there). A model that loops, allocates
    without bound or crashes the interpreter on the dummy batch does so there, and is refused with what it
    did; the server process never runs it until it passed. A model the child's check refused for another
    reason returns here: the in-process check that follows gives the reason (the same batch, the same limits).
    Costs a Python start with torch (about 2 s here).

    The check sees only the dummy batch: a model that behaves on it and not on real images is not caught."""
    limits = ModelLimits.from_env() if limits is None else limits
    device = resolve_device(device)
    memory = limits.check_mb if device.type == "cpu" else 0
    names = json.dumps(None if output_names is None else list(output_names))
    argv = [str(memory), str(path), json.dumps(spec_to_json(spec)), names, str(device), str(limits.check_s)]
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    env.setdefault("OMP_NUM_THREADS", "1")
    axes = ", ".join(map(str, spec.shape))
    what = f"a ({CHECK_BATCH}, {axes}) float32 batch"
    try:
        done = subprocess.run(
            [sys.executable, "-c", _SCREEN, *argv],
            capture_output=True,
            text=True,
            timeout=limits.check_s + SCREEN_START_S,
            env=env,
            cwd=root,
        )
    except subprocess.TimeoutExpired:
        done = None
    if done is None or done.returncode == SCREEN_SLOW:
        raise ModelTooSlow(
            f"The model took longer than {limits.check_s:g} s on {what} (Eve's limit, EVE_MODEL_CHECK_S): "
            "export a model that answers in seconds on CPU, or run it locally (python -m engine score --model FILE)."
        )
    said = (done.stderr.strip().splitlines() or [""])[-1]
    if done.returncode == 0:
        return
    if any(sign in done.stderr for sign in ("MemoryError", "can't allocate memory", "std::bad_alloc")):
        raise EveInputError(
            f"The model needed more than {limits.check_mb:,.0f} MB on {what} (Eve's limit, EVE_MODEL_CHECK_MB): "
            "export a smaller model, or run it locally (python -m engine score --model FILE)."
        )
    if done.returncode == SCREEN_NOT_TORCHSCRIPT:  # not loaded again here: a damaged file may cost gigabytes to refuse
        raise not_torchscript("the uploaded file", done.stdout.strip()[-40:])
    if done.returncode == SCREEN_REFUSED:
        return  # loaded and run within the limits and refused: `load_torchscript` says why, in this process
    how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit status {done.returncode}"
    raise EveInputError(
        f"The model crashed the process that checked it on {what} ({how}: {said[:120] or 'no message'}): "
        "export it again with torch.jit.script or torch.jit.trace, and check it with torch.jit.load on your machine."
    )


def screen_child(argv: list[str]) -> None:
    """The child's side of `screen` (argv: path, spec JSON, output names JSON, device, check_s): exits 0 when
    the model passes, `SCREEN_REFUSED` with the message on stderr when the check refuses it. `os._exit`, so a
    check thread still running past its limit does not hold the child open."""
    path, spec, names, device, check_s = argv
    try:
        limits = replace(ModelLimits.from_env(), check_s=float(check_s))
        data = Path(path).read_bytes()  # as bytes, so a message says "the uploaded file", not the store's path
        load_torchscript(
            data, spec_from_json(json.loads(spec)), output_names=json.loads(names), device=device, limits=limits
        )
    except EveInputError as exc:
        print(" ".join(str(exc).split()), file=sys.stderr, flush=True)
        if isinstance(exc, NotTorchScript):
            print(type(exc.__cause__).__name__, flush=True)
            os._exit(SCREEN_NOT_TORCHSCRIPT)
        os._exit(SCREEN_SLOW if isinstance(exc, ModelTooSlow) else SCREEN_REFUSED)
    except MemoryError:
        print("MemoryError", file=sys.stderr, flush=True)
        os._exit(1)
    sys.stderr.flush()
    os._exit(0)


def _probability_name(name: str) -> str:
    """'logit P(label=1)' -> 'P(label=1)'; 'output_0' -> 'P(output_0)'."""
    return name[len("logit ") :] if name.startswith("logit ") else f"P({name})"


def explained(model: nn.Module, card: ModelCard, explain: str) -> tuple[nn.Module, ModelCard]:
    """The model whose output is explained (`ModelRef.explain`): as it is, or a logit's probability."""
    if explain == "output":
        return model, card
    if card.output_kind != "logit":
        said = card.output_kind or "not stated"
        raise EveInputError(
            f"{card.name}'s outputs are {said}, not logits: only a logit has a probability to "
            "explain; explain the output itself, or state outputs kind 'logit' in the model's card."
        )
    names = tuple(_probability_name(n) for n in card.output_names)
    what = "sigmoid of the logit" if len(names) == 1 else "softmax over the logits"
    return Probability(model).eval(), replace(card, output_names=names, outputs=f"probability ({what})")


def load(ref: ModelRef, device: str | torch.device | None = None) -> tuple[nn.Module, ModelCard]:
    """The model a `ModelRef` names, in eval mode, and its card: a built-in model, or a TorchScript
    file fed `ref.spec` (read as bytes, so messages say "the uploaded file", not a temporary path)."""
    if not ref.is_torchscript:
        return explained(*load_model(ref.name, device), ref.explain)
    path = Path(ref.path)
    if not path.is_file():
        raise EveInputError(f"Model file {path} does not exist: check the path.")
    if ref.uploaded and ref.spec.bundle is None:  # a stranger's file: checked in a child process first
        screen(path, ref.spec, output_names=ref.output_names, device=device)
    data = path.read_bytes() if ref.uploaded else path
    model, card = load_torchscript(
        data, ref.spec, output_names=ref.output_names, name=ref.label or path.name, device=device
    )
    if ref.output_kind:
        card = replace(card, outputs=ref.output_kind)
    if ref.output_unit:
        card = replace(card, output_unit=ref.output_unit)
    return explained(model, card, ref.explain)


def stored_attributions(
    name: str, method: str = "XtrAIn", *, target: int = 0, explain: str = "output", folder: str | Path | None = None
) -> xtrain.StoredMaps:
    """The maps a zoo model's training stored (`engine.models.load_model`), with the subjects they are of.

    Raises `EveInputError` when the model was not trained with XtrAIn tracking, naming how to retrain.
    """
    model, card = load_model(name, "cpu", folder=folder)
    tracking = xtrain.Tracking.from_card(card)
    if tracking is None or not xtrain.has_stored(model):
        tracked = ", ".join(c.name for c in list_cards(folder) if c.xtrain) or "an MLP recipe with `track`"
        raise EveInputError(
            f"{name} was not trained with XtrAIn tracking: retrain it with `python -m engine train-classifier "
            f"NAME` for a recipe that tracks images ({tracked}), or use Xstep on an MLP."
        )
    model, _ = explained(model, card, explain)
    images = xtrain.mlp_of(model).xtrain_inputs.float()
    return xtrain.StoredMaps(method, tracking.images, images, xtrain.stored_maps(model, images, method, target))
