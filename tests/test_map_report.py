"""`python -m engine maps`: every method's maps of chosen images, their quality table (with
localisation against the pixels a glass-box model reads) and the region shares, from the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine.cards import ModelRef
from engine.cli.main import main
from engine.data.defaults import open_dataset
from engine.models import load
from engine.pixelmaps.report import map_report, truth_mask

GLASS = "synthbrain-glass-ventricles"  # a soft count of dark pixels in a known window


def test_the_glass_box_models_read_pixels_are_its_window():
    model, card = load(ModelRef.builtin(GLASS), "cpu")
    mask = truth_mask(model, card.spec)
    r0, r1, c0, c1 = model.window
    assert mask.sum() == (r1 - r0) * (c1 - c0) and mask[r0:r1, c0:c1].all()
    cnn, cnn_card = load(ModelRef.builtin("synthbrain-diagnosis"), "cpu")
    assert truth_mask(cnn, cnn_card.spec) is None


def test_the_cli_writes_the_quality_table_regions_and_maps(tmp_path, synthbrain):
    out = tmp_path / "quality.csv"
    methods = "Saliency,IntegratedGradients,Occlusion,FeatureAblation,ShapleyValueSampling"
    argv = ["maps", "--data", "synthbrain", "--model", GLASS, "--n", "2", "--methods", methods]
    assert main([*argv, "--regions", "anatomy", "--out", str(out)]) == 0
    quality = pd.read_csv(out).set_index("method")
    assert list(quality.index) == methods.split(",") and (quality["n_images"] == 2).all()
    # gradients are exactly zero outside the window, so all relevance lies in the read pixels; occlusion's
    # windows and the anatomy regions straddle its edges and spread relevance outside
    assert quality.loc["Saliency", "relevance_mass"] == pytest.approx(1.0)
    assert quality.loc["IntegratedGradients", "relevance_rank"] == pytest.approx(1.0)
    assert quality.loc["Occlusion", "relevance_mass"] < 1.0 and quality.loc["FeatureAblation", "relevance_mass"] < 0.5
    assert quality.loc["IntegratedGradients", "completeness_gap"] < 0.01  # IG adds up to f(x) - f(black)
    assert np.isnan(quality.loc["Saliency", "completeness_gap"]) and np.isnan(quality["random_logit"]).all()
    assert np.isnan(quality.loc["ShapleyValueSampling", "local_lipschitz"])  # sampling methods: not estimated
    regions = pd.read_csv(tmp_path / "quality-regions.csv")
    shapley = regions[regions["method"] == "ShapleyValueSampling"]
    assert shapley.groupby("subject")["share"].sum().to_numpy() == pytest.approx([1.0, 1.0], abs=1e-4)
    assert "ventricles" in set(shapley["region"])
    with np.load(tmp_path / "quality-maps.npz") as maps:
        assert maps["Saliency"].shape == (2, 1, 64, 64) and len(maps["subjects"]) == 2


def test_methods_that_do_not_apply_or_do_not_exist_stop_the_command_naming_them(tmp_path, capsys):
    argv = ["maps", "--data", "synthbrain", "--model", GLASS, "--n", "1", "--out", str(tmp_path / "q.csv")]
    assert main([*argv, "--methods", "LRP"]) == 2
    assert "LRP cannot explain synthbrain-glass-ventricles (captum's LRP has no rule" in capsys.readouterr().err
    assert main([*argv, "--methods", "Magic"]) == 2
    assert "Unknown attribution method 'Magic'" in capsys.readouterr().err
    assert main([*argv, "--regions", "anatomy", "--model", "shapes-elongated", "--data", "shapes"]) == 2
    assert "named MNI slice" in capsys.readouterr().err
    assert not (tmp_path / "q.csv").exists()


def test_every_applicable_method_by_default_on_a_cnn(synthbrain):
    model, card = load(ModelRef.builtin("synthbrain-diagnosis"), "cpu")
    report = map_report(model, card, open_dataset("synthbrain"), [0], ["LRP", "DeepLift", "KernelShap"])
    quality = report.quality.set_index("method")
    assert quality.loc["LRP", "completeness_gap"] >= 0 and np.isnan(quality.loc["KernelShap", "completeness_gap"])
    assert (quality["seconds_per_map"] > 0).all() and report.metadata["regions"] == "a grid of 8 x 8 cells"


def test_on_shapes_the_area_read_outs_truth_is_each_images_object(tmp_path, shapes):
    out = tmp_path / "shapes.csv"
    argv = ["maps", "--data", "shapes", "--model", "shapes-glass-area", "--n", "3", "--out", str(out)]
    assert main([*argv, "--methods", "Saliency,IntegratedGradients,FeatureAblation"]) == 0
    quality = pd.read_csv(out).set_index("method")
    # IG's path from black crosses every object pixel's threshold: its relevance is the object; the gradient
    # lives on the object's edge, where the soft threshold is steep, about half of it outside the object
    assert quality.loc["IntegratedGradients", "relevance_mass"] > 0.8  # 0.86 when written
    assert quality.loc["Saliency", "relevance_mass"] < quality.loc["IntegratedGradients", "relevance_mass"]
    model, card = load(ModelRef.builtin("shapes-glass-area"), "cpu")
    images = open_dataset("shapes").model_inputs(card.spec, [0, 1])
    masks = truth_mask(model, card.spec, images)
    assert masks.shape == (2, 1, 64, 64) and 0 < masks.mean() < 0.5
