"""Training the conditional latent diffusion model (`python -m engine train-diffusion DATASET`).

Top to bottom: the config and the per-dataset recipes, the training data (dataset train split,
plus extra subjects from the dataset's own generator), the condition-dropout masks, the loop,
the latent space, the probes and the read-out, then everything together and the card.
What each recipe choice was measured against is in assets/README.md ("Diffusion").
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from engine import machine
from engine.cards import DiffusionCard, DiffusionFeature
from engine.data.defaults import data_dir, load_default
from engine.data.shapes import STRIPE_PERIOD, sample_features
from engine.data.shapes_images import rendered_shapes
from engine.data.slicing import SliceSpec
from engine.data.synthbrain_slices import cached_extra_subjects
from engine.diffusion.autoencoder import AutoencoderConfig, fit_autoencoder, load_autoencoder, save_autoencoder
from engine.diffusion.codec import PCACodec
from engine.diffusion.conditions import FeatureSchema, FeatureTable, feature_table_card
from engine.diffusion.networks import Denoiser, DenoiserConfig, LatentReadout
from engine.diffusion.optim import WarmupCosineAdamW
from engine.diffusion.pipeline import ConditionalDiffusion
from engine.diffusion.probes import fit_conv_probe, fit_probe, probe_report
from engine.diffusion.sampler import TRAIN_SCHEDULE, make_scheduler
from engine.diffusion.storage import ASSETS, save
from engine.errors import EveInputError
from engine.models.zoo import list_cards, load_model

# the canonical slice each dataset's classifiers see (the zoo's specs)
CANONICAL_SPECS = {
    "synthbrain": SliceSpec("coronal", "hippocampus", 64),
    "shapes": SliceSpec("axial", None, 64),
}


@dataclass
class TrainConfig:
    dataset: str = "synthbrain"
    n_extra: int = 15000  # extra subjects from Eve's generator (0 = the dataset's train split only)
    extra_seed: int = 1000  # seed of the extra subjects (the default sets use 0)
    n_validation: int = 1000  # of the extra subjects, held out for early stopping (not trained on)
    codec: str = "pca"  # latent space: "pca" or "autoencoder" (`autoencoder.py`)
    components: int = 32  # PCA components / autoencoder code size d (latent dim d + 1)
    whiten: float = 1.0  # PCA: coefficient k divided by its sd^whiten (1: whitened; `codec.PCACodec`)
    codec_steps: int = 10000  # autoencoder training steps
    stripe_carrier: bool = False  # autoencoder told the shapes' stripe wave (`autoencoder.py`)
    stripe_centred: bool = False  # ... with its phase taken from the object's centre (`autoencoder.py`)
    noise_estimate: str = "residual"  # how the autoencoder measures the pixel noise (`autoencoder.py`)
    width: int = 384  # denoiser MLP width
    cond_input: bool = False  # the condition embedding also enters the denoiser's input layer
    depth: int = 4  # residual blocks
    steps: int = 12000  # optimiser steps at most
    eval_every: int = 500  # validation loss of the EMA weights every this many steps; the best is kept
    patience: int = 0  # stop after this many evaluations without a better validation loss (0: run every step)
    weight_decay: float = 1e-4  # AdamW
    batch: int = 256
    lr: float = 1e-3  # AdamW peak learning rate, cosine decay
    ema: float = 0.999  # EMA decay of the weights used for sampling
    p_all_dropped: float = 0.1  # mask: every feature dropped (the unconditional model)
    p_single: float = 0.3  # mask: exactly one feature kept (what the score uses)
    # otherwise each feature is kept independently with prob q ~ U(0, 1) drawn per row
    probe: str = "pca-mlp"  # feature probe kind: "pca-mlp" or "cnn" (`probes.py`)
    probe_components: int = 64  # pca-mlp
    probe_epochs: int = 80  # pca-mlp
    probe_steps: int = 6000  # cnn
    probe_stripes: bool = False  # cnn: also fed the local amplitude of the shapes' stripe wave
    readout_hidden: tuple[int, ...] = ()  # latent read-out for guidance: () linear, else MLP widths
    readout_steps: int = 8000  # MLP read-out optimiser steps
    seed: int = 0
    threads: int = 1


# per dataset: what `python -m engine train-diffusion DATASET` trains (CLI options override); the
# measurements behind each choice are in assets/README.md ("Diffusion")
RECIPES = {
    # 64 half-whitened components and the condition at the input layer: the same scores as 32
    # whitened ones and a tighter joint condition; full whitening of 64 components failed to train
    "synthbrain": TrainConfig(components=64, whiten=0.5, cond_input=True, steps=16000),
    # shapes move and have a fine stripe texture with sharp edges, which PCA blurs: a conv
    # autoencoder told the stripes' wave, its phase taken from the object's centre (on the grid's
    # phase the code held a phase that turns five times across the image, which the denoiser could
    # not follow), the noise level from flat pixel pairs (`flat_pair_noise_sd`: the intensity a
    # probe reads from a decoded image hangs on it), and an MLP read-out (a linear one reads aspect
    # too poorly to guide by)
    "shapes": TrainConfig(
        dataset="shapes",
        n_extra=31000,
        codec="autoencoder",
        components=64,
        probe="cnn",
        stripe_carrier=True,
        stripe_centred=True,
        noise_estimate="flat_pairs",
        probe_stripes=True,
        cond_input=True,
        steps=16000,
        readout_hidden=(512, 512, 512),
    ),
}


def recipe(dataset: str, **overrides) -> TrainConfig:
    if dataset not in RECIPES:
        raise EveInputError(f"No diffusion recipe for {dataset!r}: use one of {', '.join(RECIPES)}.")
    return replace(RECIPES[dataset], **{k: v for k, v in overrides.items() if v is not None})


# 1. data -------------------------------------------------------------------------------------


def training_data(config: TrainConfig, progress=None):
    """Training and validation (images (N, 1, S, S), feature table, noise-free images or None)
    triples, the real dataset, its spec and the source counts. Validation rows are extra
    generator subjects when there are extras, else a tenth of the train split; they only
    steer early stopping. Noise-free images exist where the generator can render them (shapes)."""
    if config.dataset not in CANONICAL_SPECS:
        raise EveInputError(f"No diffusion recipe for {config.dataset!r}: use one of {', '.join(CANONICAL_SPECS)}.")
    spec = CANONICAL_SPECS[config.dataset]
    ds = load_default(config.dataset)
    train = ds.split_indices("train")
    images = ds.model_inputs(spec, train)
    table = ds.table.iloc[train][ds.features].reset_index(drop=True)
    clean = dataset_noise_free(ds, train)
    if config.n_extra > config.n_validation:
        extra_images, extra_table, extra_clean = extra_subjects(config, spec, progress)
        cut = config.n_extra - config.n_validation
        validation = (
            extra_images[cut:],
            extra_table[ds.features].iloc[cut:].reset_index(drop=True),
            None if extra_clean is None else extra_clean[cut:],
        )
        images = torch.cat([images, extra_images[:cut]])
        table = pd.concat([table, extra_table[ds.features].iloc[:cut]], ignore_index=True)
        clean = None if clean is None or extra_clean is None else torch.cat([clean, extra_clean[:cut]])
        sources = {
            "dataset_train_split": len(train),
            "generator_extra": cut,
            "generator_validation": config.n_validation,
        }
    else:
        held = np.random.default_rng(config.seed).permutation(len(images)) < len(images) // 10
        validation = images[held], table[held].reset_index(drop=True), None if clean is None else clean[held]
        images, table = images[~held], table[~held].reset_index(drop=True)
        clean = None if clean is None else clean[~held]
        sources = {"dataset_train_split": len(images), "dataset_train_split_validation": int(held.sum())}
    return (images, table, clean), validation, ds, spec, sources


def dataset_noise_free(ds, rows) -> torch.Tensor | None:
    """Noise-free model inputs of the dataset's `rows` where its generator renders them (shapes,
    re-rendered from the seed and size in its truth.json), else None."""
    if (ds.truth or {}).get("dataset") != "shapes":
        return None
    noisy, clean = rendered_shapes(int(ds.truth["n"]), int(ds.truth["seed"]))
    if not torch.allclose(noisy[rows], ds.model_inputs(CANONICAL_SPECS["shapes"], rows), atol=1e-5):
        return None  # not the generator's own build (e.g. edited images): no noise-free version
    return clean[rows]


def extra_subjects(config: TrainConfig, spec: SliceSpec, progress=None):
    """`n_extra` new subjects from the dataset's own generator: model inputs, features and the
    noise-free inputs (None where the generator has none)."""
    if config.dataset == "synthbrain":
        return (*cached_extra_subjects(config.n_extra, spec, config.extra_seed, progress, workers=2), None)
    if config.dataset == "shapes":  # 0.5 ms an image: no cache needed
        images, clean = rendered_shapes(config.n_extra, config.extra_seed)
        return images, sample_features(config.n_extra, config.extra_seed), clean
    raise EveInputError(f"No generator of extra subjects for {config.dataset!r}: use n_extra=0.")


def feature_card(table: pd.DataFrame, ds, names: list[str] | None = None) -> tuple[DiffusionFeature, ...]:
    """Per feature (`names`, default every one of `ds`): kind, standardisation (training set), range
    (training set) and the marginal of the *dataset* (percentiles / level frequencies), which the score samples."""
    chosen = ds.features if names is None else names
    features = []
    for name in [f for f in ds.numeric_features if f in chosen]:
        v, data = table[name].to_numpy(float), ds.table[name].to_numpy(float)
        features.append(
            DiffusionFeature(
                name,
                "numeric",
                mean=float(v.mean()),
                sd=float(v.std()),
                min=float(v.min()),
                max=float(v.max()),
                data_sd=float(data.std(ddof=1)),
                data_percentiles=tuple(np.percentile(data, np.arange(101)).tolist()),
            )
        )
    for name in [f for f in ds.categorical_features if f in chosen]:
        levels = sorted(pd.unique(table[name]).tolist())
        freq = ds.table[name].value_counts(normalize=True)
        features.append(
            DiffusionFeature(
                name,
                "categorical",
                levels=tuple(levels),
                data_frequencies=tuple(float(freq.get(level, 0.0)) for level in levels),
            )
        )
    return tuple(features)


# 2. condition dropout ------------------------------------------------------------------------


def dropout_masks(n: int, n_features: int, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """(n, F) masks, 1 = kept: all dropped w.p. p_all_dropped, one feature kept w.p. p_single,
    else each kept independently w.p. q ~ U(0, 1) (q drawn per row)."""
    u = torch.rand(n, generator=generator)
    q = torch.rand(n, 1, generator=generator)
    mask = (torch.rand(n, n_features, generator=generator) < q).float()
    single = torch.nn.functional.one_hot(torch.randint(n_features, (n,), generator=generator), n_features).float()
    mask = torch.where((u < config.p_single)[:, None], single, mask)
    mask = torch.where((u > 1 - config.p_all_dropped)[:, None], torch.zeros_like(mask), mask)
    return mask


def slot_masks(mask: torch.Tensor, spans: list[tuple[int, int]]) -> torch.Tensor:
    """Per-feature mask (n, F) -> per-slot mask (n, C)."""
    return torch.cat([mask[:, j : j + 1].expand(-1, w) for j, (_, w) in enumerate(spans)], 1)


# 3. the loop ---------------------------------------------------------------------------------


def fit_denoiser(
    z0: torch.Tensor, c: torch.Tensor, spans, config: TrainConfig, validation: tuple, log=print
) -> tuple[Denoiser, dict]:
    """DDPM training (eps-prediction, diffusers' DDPMScheduler.add_noise) with condition dropout.

    Early stopping: every `eval_every` steps the EMA weights' loss on the validation latents
    (same dropout masks as training, fixed t and noise) is measured; the best weights are
    returned (a longer run without it overfit)."""
    torch.manual_seed(config.seed)
    g = torch.Generator().manual_seed(config.seed)
    numeric = tuple(off for off, w in spans if w == 1)
    dconf = DenoiserConfig(
        latent_dim=z0.shape[1],
        cond_dim=c.shape[1],
        n_features=len(spans),
        numeric_slots=numeric,
        width=config.width,
        depth=config.depth,
        cond_input=config.cond_input,
    )
    net = Denoiser(dconf)
    ema = Denoiser(dconf)
    ema.load_state_dict(net.state_dict())
    ema.requires_grad_(False)
    scheduler = make_scheduler("ddpm")
    optimiser = WarmupCosineAdamW(
        net.parameters(),
        steps=config.steps,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup=200,
        max_grad_norm=1.0,
    )
    n = len(z0)
    losses, t0 = [], time.time()
    curve, best = [], (np.inf, 0, None)
    for step in range(config.steps):
        idx = torch.randint(n, (config.batch,), generator=g)
        x0, cond = z0[idx], c[idx]
        mask = dropout_masks(config.batch, len(spans), config, g)
        slot = slot_masks(mask, spans)
        # 1. forward process: z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps   (Ho et al. eq. 4)
        t = torch.randint(TRAIN_SCHEDULE["num_train_timesteps"], (config.batch,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        zt = scheduler.add_noise(x0, eps, t)
        # 2. simple loss || eps - eps_theta(z_t, t, c, m) ||^2   (eq. 14)
        loss = (net(zt, t, cond, mask, slot) - eps).pow(2).mean()
        optimiser.step(loss)
        with torch.no_grad():
            for pe, pn in zip(ema.parameters(), net.parameters(), strict=True):
                pe.lerp_(pn, 1 - config.ema)
        losses.append(loss.item())
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            held = validation_loss(ema, *validation, spans, config)
            curve.append({"step": step + 1, "train": float(np.mean(losses[-config.eval_every :])), "validation": held})
            if held < best[0]:
                best = (held, step + 1, {k: v.clone() for k, v in ema.state_dict().items()})
            log(
                f"step {step + 1}/{config.steps} loss {curve[-1]['train']:.4f} validation {held:.4f} "
                f"({time.time() - t0:.0f} s)"
            )
            if config.patience and len(curve) - best[1] // config.eval_every >= config.patience:
                log(f"stopped early: no better validation loss in {config.patience} evaluations")
                break
    ema.load_state_dict(best[2])
    stats = {
        "final_loss": curve[-1]["train"],
        "loss_first_1000": float(np.mean(losses[:1000])),
        "best_validation_loss": best[0],
        "best_step": best[1],
        "steps_run": curve[-1]["step"],
        "curve": curve,
        "seconds": time.time() - t0,
    }
    return ema.eval(), stats


def validation_loss(net: Denoiser, z0: torch.Tensor, c: torch.Tensor, spans, config: TrainConfig) -> float:
    """The training objective on held-out latents: the same mask mix, fixed t, noise and masks."""
    return heldout_loss(net, z0, c, spans, config, seed=12345, reps=4)


@torch.inference_mode()
def heldout_loss(
    net: Denoiser,
    z0: torch.Tensor,
    c: torch.Tensor,
    spans,
    config: TrainConfig | None = None,
    seed: int = 1,
    reps: int = 8,
) -> float:
    """Mean eps-MSE on held-out latents over random t and noise: with every feature kept, or
    with `config`'s condition-dropout masks."""
    g = torch.Generator().manual_seed(seed)
    scheduler = make_scheduler("ddpm")
    total = 0.0
    for _ in range(reps):
        mask = torch.ones(len(z0), len(spans)) if config is None else dropout_masks(len(z0), len(spans), config, g)
        t = torch.randint(TRAIN_SCHEDULE["num_train_timesteps"], (len(z0),), generator=g)
        eps = torch.randn(z0.shape, generator=g)
        total += (net(scheduler.add_noise(z0, eps, t), t, c, mask, slot_masks(mask, spans)) - eps).pow(2).mean().item()
    return total / reps


@torch.inference_mode()
def codec_fidelity(codec: PCACodec, images: torch.Tensor, dataset: str, seed: int = 0) -> dict:
    """Correlation of each zoo classifier's output on held-out images and on their codec
    round trip (decode(encode(x)) with fresh noise): how much the latent space loses for them."""
    noise = torch.randn(len(images), codec.size, codec.size, generator=torch.Generator().manual_seed(seed))
    out = {}
    for card in list_cards():
        if card.dataset != dataset:
            continue
        model, _ = load_model(card.name)
        y, y_rt = model(images)[:, 0], model(codec.decode(encode(codec, images), noise))[:, 0]
        out[card.name] = float(np.corrcoef(y.numpy(), y_rt.numpy())[0, 1])
    return out


def fit_codec(images: torch.Tensor, clean: torch.Tensor | None, config: TrainConfig, log=print):
    """The latent space and its card entry (what `storage.build_codec` rebuilds it from).

    A trained autoencoder is cached in data/.cache under a hash of everything it depends on
    (its config, the training images and targets), so retraining only the denoiser skips it."""
    if config.codec == "pca":
        codec = PCACodec.fit(images, config.components, config.whiten)
        return codec, {"kind": "pca", "d": config.components, "whiten": config.whiten}
    if config.codec != "autoencoder":
        raise EveInputError(f"Unknown codec {config.codec!r}: use 'pca' or 'autoencoder'.")
    ae = AutoencoderConfig(
        latent_dim=config.components + 1,
        steps=config.codec_steps,
        seed=config.seed,
        stripe_period=STRIPE_PERIOD if config.stripe_carrier else None,
        centred_stripes=config.stripe_centred,
    )
    entry = {
        "kind": "autoencoder",
        "latent_dim": ae.latent_dim,
        "channels": list(ae.channels),
        "stripe_period": ae.stripe_period,
        "centred_stripes": ae.centred_stripes,
        "noise_estimate": config.noise_estimate,
        "training": {**asdict(ae), "channels": list(ae.channels)},
    }
    path = autoencoder_cache_path(images, clean, ae)
    if path.is_file():
        log(f"codec: cached autoencoder {path.name}")
        codec = load_autoencoder(path)
        if codec.noise_estimate != config.noise_estimate:  # the network is the same; its noise statistics are not
            codec.noise_estimate = config.noise_estimate
            codec.fit_statistics(images)
        return codec, entry
    t0 = time.time()
    codec = fit_autoencoder(images, targets=clean, config=ae, noise_estimate=config.noise_estimate, log=log)
    entry["training"]["seconds"] = time.time() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    save_autoencoder(codec, path)
    return codec, entry


def autoencoder_cache_path(images: torch.Tensor, clean: torch.Tensor | None, ae) -> Path:
    digest = hashlib.sha1(json.dumps(asdict(ae), sort_keys=True).encode())
    for array in (images, clean):
        if array is not None:
            digest.update(array.numpy().tobytes())
    return data_dir() / ".cache" / f"autoencoder-{digest.hexdigest()[:12]}.safetensors"


def codec_design(config: TrainConfig) -> str:
    """The card's one-line description of the latent space."""
    if config.codec == "pca":
        return "PCA codec (d components + noise level)"
    carrier = " with the stripes' known carrier" if config.stripe_carrier else ""
    carrier += ", its phase from the object's centre" if config.stripe_carrier and config.stripe_centred else ""
    return f"conv-autoencoder codec{carrier} (d code dims + noise level)"


def fit_feature_probe(images: torch.Tensor, targets: np.ndarray, config: TrainConfig, log=print):
    """The probe of `config.probe` kind and its card entry (what `probes.build_probe` needs)."""
    if config.probe == "pca-mlp":
        probe = fit_probe(
            images, targets, n_components=config.probe_components, epochs=config.probe_epochs, seed=config.seed
        )
        return probe, {"kind": "pca-mlp", "n_components": config.probe_components}
    if config.probe == "cnn":
        period = STRIPE_PERIOD if config.probe_stripes else None
        probe = fit_conv_probe(
            images, targets, steps=config.probe_steps, seed=config.seed, stripe_period=period, log=log
        )
        return probe, {
            "kind": "cnn",
            "channels": list(probe.channels),
            "steps": config.probe_steps,
            "stripe_period": period,
        }
    raise EveInputError(f"Unknown probe {config.probe!r}: use 'pca-mlp' or 'cnn'.")


def rebuild_command(config: TrainConfig) -> str:
    """The call that reproduces `config`: the CLI with the options that differ from the dataset's
    recipe, or, when a field the CLI has no option for differs (e.g. `whiten`), the Python call."""
    changed = {f: v for f, v in asdict(config).items() if v != getattr(RECIPES[config.dataset], f)}
    flags = {
        "steps": "--steps",
        "n_extra": "--n-extra",
        "components": "--components",
        "seed": "--seed",
        "threads": "--threads",
    }
    if changed.keys() <= flags.keys():
        options = "".join(f" {flags[f]} {changed[f]}" for f in flags if f in changed)
        return f"python -m engine train-diffusion {config.dataset}{options}"
    overrides = "".join(f", {f}={v!r}" for f, v in changed.items())
    return (
        'python -c "from engine.diffusion.train import recipe, train_diffusion; '
        f'train_diffusion(recipe({config.dataset!r}{overrides}))"'
    )


def fit_readout(
    z0: torch.Tensor, targets: np.ndarray, hidden: tuple[int, ...] = (), steps: int = 8000, seed: int = 0
) -> LatentReadout:
    """The differentiable feature read-out that `readout_guidance` steers by: the standardised
    numeric features from the latent, by least squares (`hidden` = ()) or an MLP trained on the
    mean absolute error, with a little noise on its input (0.02 of the whitened latent's sd) so
    its gradient is smooth around the training latents."""
    y = torch.as_tensor(targets, dtype=torch.float32)
    torch.manual_seed(seed)
    readout = LatentReadout(z0.shape[1], y.shape[1], hidden)
    if not hidden:
        design = torch.cat([z0.double(), torch.ones(len(z0), 1, dtype=torch.float64)], 1)
        solution = torch.linalg.lstsq(design, y.double()).solution  # (D + 1, Fn)
        with torch.no_grad():
            readout.net[0].weight.copy_(solution[:-1].T)
            readout.net[0].bias.copy_(solution[-1])
        return readout.eval()
    g = torch.Generator().manual_seed(seed)
    optimiser = WarmupCosineAdamW(
        readout.parameters(), steps=steps, lr=1e-3, weight_decay=1e-4, warmup=max(1, steps // 50)
    )
    for _ in range(steps):
        rows = torch.randint(len(z0), (256,), generator=g)
        z = z0[rows] + 0.02 * torch.randn(len(rows), z0.shape[1], generator=g)
        loss = (readout(z) - y[rows]).abs().mean()
        optimiser.step(loss)
    return readout.eval()


@torch.inference_mode()
def encode(codec: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return torch.cat([codec.encode(batch) for batch in images.split(1024)])


# 4. everything: data -> codec -> denoiser -> probes -> card ---------------------------------


def train_diffusion(config: TrainConfig, log=print, save_to=ASSETS) -> ConditionalDiffusion:
    torch.set_num_threads(config.threads)
    t_start = time.time()
    (images, table, clean), (val_images, val_table, _), ds, spec, sources = training_data(config)
    log(f"training images: {tuple(images.shape)} ({sources})")
    features = feature_card(table, ds)
    schema = FeatureSchema(config.dataset, features)
    c, spans = schema.encode_rows(table)
    c_val, _ = schema.encode_rows(val_table)
    # 1. the latent space
    codec, codec_card = fit_codec(images, clean, config, log)
    del clean
    z0, z_val = encode(codec, images), encode(codec, val_images)
    test = ds.split_indices("test")
    test_images = ds.model_inputs(spec, test)
    z_test = encode(codec, test_images)
    with torch.inference_mode():
        recon = codec.decode_mean(z_test)
    codec_rms = float((recon.clamp(0.0, 1.0) - test_images).pow(2).mean().sqrt())  # the data are clipped
    log(f"codec: {config.codec} d={config.components}, held-out RMS error {codec_rms:.4f}")
    fidelity = codec_fidelity(codec, test_images, config.dataset)
    log(f"codec fidelity (classifier output corr, real vs decode(encode) + noise): {fidelity}")
    # 2. the denoiser
    net, stats = fit_denoiser(z0, c, spans, config, (z_val, c_val), log)
    c_test, _ = schema.encode_rows(ds.table.iloc[test][ds.features].reset_index(drop=True))
    stats["heldout_loss_all_features"] = heldout_loss(net, z_test, c_test, spans)
    stats["train_loss_all_features"] = heldout_loss(net, z0[: len(test)], c[: len(test)], spans)
    log(f"loss: final train {stats['final_loss']:.4f}, held-out {stats['heldout_loss_all_features']:.4f}")
    # 3. the probes (numeric features), evaluated on the dataset's test split
    numeric = [f for f in features if not f.is_categorical]
    names = [f.name for f in numeric]
    mean, sd = np.array([f.mean for f in numeric]), np.array([f.sd for f in numeric])
    targets = (table[names].to_numpy(float) - mean) / sd
    probe, probe_card = fit_feature_probe(images, targets, config, log)
    report = probe_report(
        probe,
        test_images,
        ds.table.iloc[test][names].to_numpy(float),
        names,
        mean,
        sd,
        np.array([f.data_sd for f in numeric]),
    )
    for name, r in report.items():
        log(f"probe {name}: R2 {r['r2']:.3f}, MAE/SD {r['mae_over_sd']:.3f}")
    t_readout = time.time()
    readout = fit_readout(z0, targets, config.readout_hidden, config.readout_steps, config.seed)
    readout_seconds = time.time() - t_readout
    log(f"read-out ({'MLP' if config.readout_hidden else 'linear'}): {readout_seconds:.0f} s")
    with torch.inference_mode():
        val_pred = readout(z_val).numpy() * sd + mean
    val_err = np.abs(val_pred - val_table[names].to_numpy(float)).mean(0)
    readout_report = {name: float(val_err[j] / numeric[j].data_sd) for j, name in enumerate(names)}
    wall = time.time() - t_start
    card = DiffusionCard(
        name=f"{config.dataset}-diffusion",
        dataset=config.dataset,
        spec=spec,
        design=f"latent diffusion: {codec_design(config)} and a residual-MLP eps-denoiser "
        "with adaLN conditioning on the standardised feature vector; per-feature condition dropout; "
        "trained with diffusers' DDPMScheduler, sampled with DPM-Solver++(2M)",
        features=features,
        probe=probe_card,
        probe_features=tuple(names),
        codec={**codec_card, "heldout_rms": codec_rms, "classifier_fidelity": fidelity},
        denoiser=net.config.to_json(),
        schedule=dict(TRAIN_SCHEDULE),
        training={
            "config": asdict(config),
            "sources": sources,
            **stats,
            "wall_time_seconds": wall,
            "threads": config.threads,
            "machine": machine(),  # read off the machine; what else shared it goes in assets/README.md
        },
        probe_report=report,
        readout={"hidden": list(config.readout_hidden), "seconds": readout_seconds},
        readout_validation_mae_over_sd=readout_report,
        feature_table=feature_table_card(len(table)),
        command=rebuild_command(config),
    )
    model = ConditionalDiffusion(
        codec,
        net,
        card,
        readout=readout.requires_grad_(False),
        probe=probe,
        table=FeatureTable.from_frame(schema, table),
    )
    if save_to is not None:
        path = save(model, save_to)
        log(f"saved {path} ({wall:.0f} s)")
    return model
