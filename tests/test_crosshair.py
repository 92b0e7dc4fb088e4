"""Browse's linked crosshair (AppTest, real engine): a click in one plane moves the other two planes'
sliders to the clicked voxel and reads out its mm coordinate and intensity, in either orientation; the
sliders still move it; a 3D model's cube follows it in three planes, and the map's peak is a click away.

AppTest cannot click a plotly chart, so a click is sent the way the browser sends it: the chart's
selection state (the clicked point of its click layer) as the chart's widget value for the next run.
tests/test_browser.py clicks a real chart.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from streamlit.proto.WidgetStates_pb2 import WidgetState
from test_app import _app, _figures, _no_exception, _texts

from components import state
from engine.data.slicing import PLANES, cube_voxel, pixel_of_voxel, voxel_of_click

SLIDERS = {plane: state.keyed(state.BROWSE_SLICE, "synthbrain", plane) for plane in PLANES}


def _browse(model: str | None = None):
    at = _app()
    if model is not None:
        at.sidebar.selectbox(key=state.keyed(state.MODEL, "synthbrain")).set_value(model).run()
    at.switch_page("app_pages/browse.py").run()
    _no_exception(at)
    return at


def _plane_chart(at, plane: str):
    """The chart of one plane of the volume (not the model's input)."""
    for chart in at.get("plotly_chart"):
        title = json.loads(chart.proto.spec)["layout"]["title"]["text"]
        if title.startswith(f"{plane} · voxel"):
            return chart
    raise AssertionError(f"no {plane} plane drawn")


def _click(at, plane: str, x: int, y: int):
    """What the browser sends when a point of a plane's click layer (trace 1) is clicked, then the rerun."""
    chart = _plane_chart(at, plane)
    columns = json.loads(chart.proto.spec)["layout"]["xaxis"]["range"][1] + 0.5
    index = int(y * columns + x)
    point = dict(curve_number=1, point_number=index, point_index=index, x=x, y=y)
    selection = dict(selection=dict(points=[point], point_indices=[index], box=[], lasso=[]))
    states = at._tree.get_widget_states()
    states.widgets.append(WidgetState(id=chart.proto.id, string_value=json.dumps(selection)))
    at._run(states)
    _no_exception(at)
    return at


def _crosshair_lines(figure: dict) -> tuple[set[float], set[float]]:
    """The columns of the crosshair's vertical lines, the rows of its horizontal ones."""
    shapes = figure["layout"].get("shapes", [])
    return {s["x0"] for s in shapes if s["x0"] == s["x1"]}, {s["y0"] for s in shapes if s["y0"] == s["y1"]}


def _sliders(at) -> dict[str, int]:
    return {plane: at.slider(key=key).value for plane, key in SLIDERS.items()}


@pytest.mark.parametrize("orientation", ["neurological", "radiological"])
def test_a_click_on_one_plane_moves_the_other_planes_to_the_clicked_voxel(orientation):
    at = _browse()
    if orientation == "radiological":
        at.button_group(key=state.BROWSE_ORIENTATION).set_value("radiological").run()
    before = _sliders(at)
    assert before == {"axial": 47, "coronal": 58, "sagittal": 49}  # the middle of the 99 x 117 x 95 volume
    volume_shape = (99, 117, 95)
    x, y = 20, 30  # a point in the left (neurological) or right (radiological) half, anterior
    expected = voxel_of_click(volume_shape, "axial", 47, x, y, radiological=orientation == "radiological")
    _click(at, "axial", x, y)
    after = _sliders(at)
    assert after == {"axial": 47, "coronal": expected[1], "sagittal": expected[0]}
    assert after["coronal"] != before["coronal"] and after["sagittal"] != before["sagittal"]
    # the patient's side: x = 20 is on the patient's left in neurological view, right in radiological
    assert (expected[0] < 49) == (orientation == "neurological")
    # the other planes show the new slices, and every plane draws the crosshair at the clicked voxel
    titles = [f["layout"]["title"]["text"] for f in _figures(at)]
    assert f"coronal · voxel {expected[1]} " in titles[1] and f"sagittal · voxel {expected[0]} " in titles[2]
    for plane in PLANES:
        figure = json.loads(_plane_chart(at, plane).proto.spec)
        column, row = pixel_of_voxel(volume_shape, plane, expected, radiological=orientation == "radiological")
        assert _crosshair_lines(figure) == ({column}, {row}), plane
    axial_lines = _crosshair_lines(json.loads(_plane_chart(at, "axial").proto.spec))
    assert axial_lines == ({x}, {y})  # in the clicked plane, where the click was
    # the readout: the voxel, its world coordinates through the affine (2 mm voxels, origin -98, -134, -72)
    text = _texts(at)
    world = 2.0 * np.asarray(expected) + [-98.0, -134.0, -72.0]
    assert f"voxel ({expected[0]}, {expected[1]}, {expected[2]})" in text
    assert f"x {world[0]:+.1f} mm, y {world[1]:+.1f} mm, z {world[2]:+.1f} mm" in text and "intensity" in text


def test_the_sliders_still_move_the_crosshair_after_a_click():
    at = _browse()
    _click(at, "coronal", 60, 20)  # a point in the coronal plane: the axial and sagittal slices follow
    clicked = _sliders(at)
    assert clicked["coronal"] == 58 and clicked["axial"] == 95 - 1 - 20 and clicked["sagittal"] == 60
    at.slider(key=SLIDERS["axial"]).set_value(30).run()
    _no_exception(at)
    assert _sliders(at) == {**clicked, "axial": 30}
    coronal = json.loads(_plane_chart(at, "coronal").proto.spec)
    assert _crosshair_lines(coronal) == ({60}, {95 - 1 - 30})  # the horizontal line follows the axial slice
    assert "voxel (60, 58, 30)" in _texts(at)
    at.toggle(key=state.BROWSE_CROSSHAIR).set_value(False).run()
    _no_exception(at)
    assert _crosshair_lines(json.loads(_plane_chart(at, "coronal").proto.spec)) == (set(), set())


def test_a_click_layer_covers_every_pixel_and_carries_the_hover():
    at = _browse()
    axial = json.loads(_plane_chart(at, "axial").proto.spec)
    heatmap, layer = axial["data"]
    assert heatmap["type"] == "heatmap" and heatmap["hoverinfo"] == "skip"
    assert layer["type"] == "scatter" and layer["marker"]["opacity"] == 0
    assert layer["marker"]["maxdisplayed"] == 1  # one drawn, ~10k hovered and clicked: 10k SVG markers cost ~0.4 s
    assert layer["x"]["dtype"] == "u1" and "intensity" in layer["hovertemplate"]
    assert len(json.dumps(axial)) < 450_000  # 117 x 99 pixels: ~370 kB with the click layer, ~270 kB without


def test_a_3d_models_cube_follows_the_crosshair_and_its_maps_peak_is_a_click_away():
    at = _browse("synthbrain-diagnosis-3d")
    at.toggle(key=state.BROWSE_OVERLAY).set_value(True).run()
    _no_exception(at)
    text = _texts(at)
    grid = ((99, 117, 95), np.array([2.0, 2.0, 2.0]), 48, 2.5)
    centre = cube_voxel(*grid, (49, 58, 47))
    assert f"the cube's voxel {centre}" in text and "largest value" in text
    titles = [f["layout"]["title"]["text"] for f in _figures(at)[-3:]]
    assert titles == [f"{p} · cube voxel {centre[a]}" for p, a in (("axial", 2), ("coronal", 1), ("sagittal", 0))]
    assert all(len(f["data"]) == 2 and f["layout"]["shapes"] for f in _figures(at)[-3:])  # map and crosshair
    assert len({f["data"][1]["zmax"] for f in _figures(at)[-3:]}) == 1  # the map's planes share one colour scale
    _click(at, "sagittal", 40, 50)
    moved = cube_voxel(*grid, (49, 40, 95 - 1 - 50))
    assert f"the cube's voxel {moved}" in _texts(at)
    assert [f["layout"]["title"]["text"] for f in _figures(at)[-3:]][0] == f"axial · cube voxel {moved[2]}"
    peak = re.search(r"largest value is at the cube's voxel (\(\d+, \d+, \d+\))", _texts(at)).group(1)
    at.button(key=state.BROWSE_TO_PEAK).click().run()
    _no_exception(at)
    assert f"The planes cross at the crosshair (the cube's voxel {peak})" in _texts(at)
    assert at.button(key=state.BROWSE_TO_PEAK).disabled  # already there
    assert _sliders(at) != {"axial": 95 - 1 - 50, "coronal": 40, "sagittal": 49}
