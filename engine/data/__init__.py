"""Datasets: the folder interface (`load_dataset`) and Eve's embedded synthetic sets."""

from engine.data.dataset import Dataset, load_dataset
from engine.data.slicing import NAMED_SLICES, PLANES, SliceSpec

__all__ = ["NAMED_SLICES", "PLANES", "Dataset", "SliceSpec", "load_dataset"]
