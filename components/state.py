"""Every `st.session_state` key the app uses, and the one place they are initialised.

Widget keys are named constants here. Widgets whose range depends on the loaded data
(slice sliders, feature sliders) build their key from a constant prefix plus the data's
identity (`keyed(PREFIX, ...)`), so switching dataset never leaves an out-of-range value.
"""

from __future__ import annotations

import streamlit as st

from engine.cards import USER_DEFAULT
from engine.options import EXPLORER, SCORE

# -- sidebar widgets ---------------------------------------------------------------------
DATASET = "sidebar_dataset"  # "synthbrain" | "shapes" | "upload"
DATASET_FALLBACK = "sidebar_dataset_fallback"  # True once a session opened on another set while the default built
DATASET_UPLOAD = "sidebar_dataset_upload"  # file uploader: features.csv + NIfTI files, or a .zip
MODEL = "sidebar_model"  # prefix: + dataset; a zoo card name, or UPLOADED_MODEL
MODEL_UPLOAD = "sidebar_model_upload"  # file uploader: TorchScript .pt
MODEL_CARD_UPLOAD = "sidebar_model_card_upload"  # file uploader: the model's JSON card (optional)
MODEL_INPUT = "sidebar_model_input"  # "slice" | "volume": what an uploaded model takes
MODEL_SPACING = "sidebar_model_spacing"  # volume input: isotropic voxel size in mm (0: fit the field of view)
MODEL_PLANE = "sidebar_model_plane"  # slice spec of an uploaded model
MODEL_SLICE = "sidebar_model_slice"
MODEL_SIZE = "sidebar_model_size"
MODEL_INTENSITY = "sidebar_model_intensity"  # intensity rule an uploaded model is fed
MODEL_ORIENTATION = "sidebar_model_orientation"  # "stored" | "ras": the arrays an uploaded model is fed
MODEL_REGISTER = "sidebar_model_register"  # register an uploaded model's volumes to MNI152 first
EXPLAIN = "sidebar_explain"  # prefix: + model ref; "output" (the logit as it is) or "probability"
OUTPUT = "sidebar_output"  # prefix: + model id; the name of the model output to explain
DEVICE = "sidebar_device"

# -- app state (not widgets) -------------------------------------------------------------
USER_DATASET = "user_dataset_dir"  # folder of the last uploaded dataset that loaded
USER_DATASET_ERROR = "user_dataset_error"  # message of the last failed dataset upload
USER_MODEL = "user_model_path"  # TorchScript file of the last uploaded model that loaded
USER_MODEL_ERROR = "user_model_error"
USER_CARD = "user_model_card"  # (digest, engine.cards.UserCard) of the last uploaded JSON card that parsed
SELECTION = "selection"  # components.sidebar.Selection of this run
RESULTS = "results"  # computed results kept for the session: {key: value}
UPLOADS = "uploads"  # {uploader key: {upload identity: components.uploads.Written}}: what each upload wrote

# -- page widgets ------------------------------------------------------------------------
BROWSE_FILTER_FEATURE = "browse_filter_feature"  # prefix: + dataset (its features)
BROWSE_FILTER_RANGE = "browse_filter_range"  # prefix: + dataset + feature
BROWSE_SPLIT = "browse_split"  # prefix: + dataset (its splits)
BROWSE_TABLE = "browse_table"  # dataframe row selection
BROWSE_SUBJECT = "browse_subject"  # prefix: + dataset
BROWSE_SLICE = "browse_slice"  # prefix: + dataset + plane
BROWSE_VIEW = "browse_view"  # prefix: + dataset + plane; a plane's chart, its click selection (the crosshair)
BROWSE_CROSSHAIR = "browse_crosshair"  # draw the crosshair's lines in the planes
BROWSE_TO_PEAK = "browse_to_peak"  # the button moving the crosshair to a 3D map's largest value
BROWSE_ORIENTATION = "browse_orientation"
BROWSE_WINDOW = "browse_window"  # (low, high) displayed intensity: window/level
BROWSE_OVERLAY = "browse_overlay"
BROWSE_OVERLAY_METHOD = "browse_overlay_method"
BROWSE_OVERLAY_OPACITY = "browse_overlay_opacity"
BROWSE_OVERLAY_CMAP = "browse_overlay_cmap"
BROWSE_WHATIF = "browse_whatif"  # the section is on
BROWSE_WHATIF_FEATURE = "browse_whatif_feature"  # prefix: + dataset
BROWSE_WHATIF_VALUE = "browse_whatif_value"  # prefix: + dataset + subject + feature

SCORES_FEATURES = "scores_features"  # prefix: + dataset
SCORES_SPLIT = "scores_split"  # prefix: + dataset (its splits)
SCORES_N_BOOT = "scores_n_boot"
SCORES_VIEW = "scores_view"  # one feature on its own, added to the others, or its fair share (components.feature_sets)
SCORES_CURVE_FEATURE = "scores_curve_feature"  # prefix: + dataset
SCORES_DIFFUSION_RUN = "scores_diffusion_run"
SCORES_ANCHORS_RUN = "scores_anchors_run"  # the button that finds the cohort's rules (anchors)
SCORES_DIFFUSION_N = "scores_diffusion_n"
SCORES_DIFFUSION_K = "scores_diffusion_k"
GENERATOR_TRAIN = "generator_train"  # prefix: + section; learns a folder's linear-Gaussian generator

EXPLORER_FEATURE = "explorer_feature"  # prefix: + dataset
EXPLORER_VALUE = "explorer_value"  # prefix: + dataset + feature
EXPLORER_VALUE_B = "explorer_value_b"  # prefix: + dataset + feature
EXPLORER_N = "explorer_n"
EXPLORER_SEED = "explorer_seed"
EXPLORER_GUIDANCE = "explorer_guidance"
EXPLORER_STEP = "explorer_step"  # step buttons across the range
EXPLORER_LIVE = "explorer_live"  # toggle: scrub the samples in the browser (components.scrubber)
EXPLORER_SCRUB = "explorer_scrub"  # prefix: + generator + feature; the scrubber component
EXPLORER_BANK = "explorer_bank"  # {bank key: positions drawn}: the scrubber's bank on screen
EXPLORER_RELEASED = "explorer_released"  # the scrubber's release moved the value (the page reruns)

COMPARE_SUBJECT = "compare_subject"  # prefix: + dataset
COMPARE_SIGNED = "compare_signed"
COMPARE_PLANE = "compare_plane"  # the plane through a volume model's maps
COMPARE_OTHER_MODEL = "compare_other_model"
COMPARE_QUALITY_RUN = "compare_quality_run"
COMPARE_REGIONS = "compare_regions"  # prefix: + model; which regions the region methods use
COMPARE_SLOW_RUN = "compare_slow_run"  # the button computing the sampling maps (Shapley, LIME, KernelSHAP)

TRUTH_TOLERANCE = "truth_tolerance"

UPLOADED_MODEL = "uploaded TorchScript model"
ORIENTATIONS = ("neurological", "radiological")
OVERLAY_CMAPS = ("Hot", "Inferno", "RdBu_r", "Viridis")

# defaults of keys whose value does not depend on the data
DEFAULTS: dict = {
    DATASET: "synthbrain",
    # an uploaded model's contract starts at the engine's one default (the CLI's too)
    MODEL_INPUT: USER_DEFAULT.input,
    MODEL_SPACING: 0.0,
    MODEL_PLANE: USER_DEFAULT.plane,
    MODEL_SLICE: "middle" if USER_DEFAULT.index is None else str(USER_DEFAULT.index),
    MODEL_SIZE: USER_DEFAULT.size,
    MODEL_INTENSITY: USER_DEFAULT.intensity,
    MODEL_ORIENTATION: USER_DEFAULT.orientation,
    MODEL_REGISTER: USER_DEFAULT.register,
    DEVICE: "cpu",
    USER_DATASET: None,
    USER_DATASET_ERROR: None,
    USER_MODEL: None,
    USER_MODEL_ERROR: None,
    USER_CARD: None,
    SELECTION: None,
    RESULTS: {},
    UPLOADS: {},
    BROWSE_ORIENTATION: "neurological",
    BROWSE_WINDOW: (0.0, 1.0),
    BROWSE_CROSSHAIR: True,
    BROWSE_OVERLAY: False,
    BROWSE_WHATIF: False,
    BROWSE_OVERLAY_OPACITY: 0.5,
    BROWSE_OVERLAY_CMAP: "Hot",
    SCORES_N_BOOT: SCORE.n_boot,
    SCORES_DIFFUSION_N: SCORE.n_per_value,
    SCORES_DIFFUSION_K: SCORE.k_values,
    EXPLORER_N: EXPLORER.n,
    EXPLORER_SEED: EXPLORER.seed,
    EXPLORER_GUIDANCE: EXPLORER.guidance,
    EXPLORER_LIVE: True,
    EXPLORER_BANK: {},
    EXPLORER_RELEASED: False,
    COMPARE_SIGNED: "absolute",
    COMPARE_PLANE: "coronal",
    TRUTH_TOLERANCE: 0.10,
}


# settings a result's key names (`result_key`): kept while their widgets are off screen, which Streamlit
# would otherwise forget (a page the user left), so a result computed with them is found again
KEPT = (SCORES_N_BOOT, SCORES_DIFFUSION_K, SCORES_DIFFUSION_N)


def init_state() -> None:
    """Set every static key once per session (the `if key not in` idiom); keep the `KEPT` widget values."""
    for key, value in DEFAULTS.items():
        if key not in st.session_state:
            st.session_state[key] = value.copy() if isinstance(value, dict) else value
    for key in KEPT:
        st.session_state[key] = st.session_state[key]  # re-set: a widget's value outlives its page


def keyed(prefix: str, *parts) -> str:
    """A widget key for data-dependent widgets: the constant prefix plus the data's identity."""
    return ":".join([prefix, *(str(p) for p in parts)])


def result_key(what: str, sel, *more) -> tuple:
    """The one key of a result kept for the session (`results()`): what it is, and everything it depends on,
    the dataset, model (with its input contract and what it explains), device, output and generator of the
    selection, then `more` (the result's own settings: K and N, the rows, the regions...)."""
    return (what, sel.source, sel.model_ref, sel.device, sel.output, sel.generator, *more)


def results() -> dict:
    """Results computed in this session (diffusion scores, quality checks), kept across errors."""
    return st.session_state[RESULTS]
