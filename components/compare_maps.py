"""Compare's maps: one image's maps by every method in one grid (one colour scale, signed or absolute), an
MLP's training-trajectory maps beside them, the sampling methods' on request, and what each region carries
(`loaders.region_table`)."""

from __future__ import annotations

import streamlit as st

from components import errors, loaders, maps, progress, state
from engine.data.slicing import cube_planes


def draw(sel, row: int, subject: str, image, *, signed: bool, plane: str | None, region_kind: str) -> None:
    """The maps of `image` (the model's input for `row`, one plane of a cube's), and the region table."""
    methods = loaders.baseline_methods(sel.model_ref, sel.device)

    def compute_maps(names: list[str], done=None) -> dict:
        found = {}
        for i, method in enumerate(names):
            with errors.shown(f"The {method} map"):
                found[method] = loaders.attribution(
                    sel.source, sel.model_ref, sel.device, row, method, sel.output, region_kind
                )
            if done:
                done(i + 1, len(names))
        return found

    def show_maps(found: dict, key: str) -> None:
        if found:
            shown = loaders.display_maps(found, signed)
            if plane is not None:
                shown = {method: cube_planes(m)[plane][1] for method, m in shown.items()}
            st.plotly_chart(maps.map_grid(shown, image, signed=signed), key=key)

    # an MLP's maps from its training trajectory (engine.models.xtrain): XtrAIn and XtrAIn+ stored by training for the
    # images it tracked, Xstep for any image
    tracking = loaders.xtrain_tracking(sel.model_ref, sel.device)
    trained = loaders.training_methods(sel.model_ref, sel.device, subject)
    with st.status(f"Computing {len(methods) + len(trained)} maps...", expanded=False) as status:
        found = compute_maps(methods + trained)
        status.update(label=f"{len(found)} maps", state="complete")
    show_maps(found, "compare_maps")
    if tracking is not None:
        shown = ", ".join(m for m in trained if m in tracking.stored) or "none for this image"
        st.caption(
            f"From the training trajectory (XtrAIn, Lymperopoulos et al.): XtrAIn sums, over all {tracking.steps} SGD "
            "steps, how the output changed when only each pixel's first-layer weights took the step; XtrAIn+ keeps the "
            "steps that raised it. Training stored them for its tracked test images "
            f"({', '.join(tracking.images)}); stored maps shown: {shown}. Xstep maps any image: {tracking.xstep}."
        )
    st.caption(
        f"Each map is scaled by its own 99th percentile of |attribution|, then all share one colour scale "
        f"({'red = raises, blue = lowers the output' if signed else 'brighter = larger |attribution|'}). "
        "Region methods give one value per region. To enlarge, hover the maps and click the full-screen button at "
        "their top right."
    )
    missing = loaders.unavailable_methods(sel.model_ref, sel.device)
    if missing:
        st.caption("Not available for this model: " + "; ".join(f"{m}: {why}" for m, why in missing.items()) + ".")

    slow = [m for m in loaders.baseline_methods(sel.model_ref, sel.device, slow=True) if m not in methods]
    slow_key = state.result_key("slow-maps", sel, row, region_kind)
    if slow:
        st.markdown("**Sampling-based maps**: " + ", ".join(slow) + " (hundreds of forward passes an image).")
        if st.button(f"Compute {len(slow)} sampling maps", key=state.COMPARE_SLOW_RUN):
            state.results()[slow_key] = True
        if state.results().get(slow_key):
            bar = st.progress(0.0, text="Sampling...")
            sampled = compute_maps(slow, progress.on(bar, "Sampling maps"))
            bar.empty()
            show_maps(sampled, "compare_slow_maps")
            found |= sampled

    regional = [m for m in ("ShapleyValueSampling", "FeatureAblation") if m in found]
    if regional:
        region_panel(sel, row, regional[0], found[regional[0]], region_kind)


def region_panel(sel, row: int, method: str, found, region_kind: str) -> None:
    """What each region carries in `method`'s map of the image (`loaders.region_table`): shares of the total
    |attribution| that add up to 100%, the direction each region pushes, and what the map cannot separate."""
    chosen, table, difference = loaders.region_table(
        sel.source, sel.model_ref, sel.device, row, sel.output, found, region_kind
    )
    st.markdown(f"**By region ({chosen.source}), from {method}**")
    st.dataframe(
        # (the share of f(x) - f(black) stays in the CLI's CSV: regions pushing opposite ways each carry more than
        # 100% of it, which reads as an error on a page)
        table.head(8)[["region", "share", "direction", "attribution", "pixels"]],
        hide_index=True,
        column_config={
            "share": st.column_config.ProgressColumn(
                "share of |attribution|", format="percent", min_value=0, max_value=1
            ),
            "direction": st.column_config.TextColumn("pushes the output"),
            "attribution": st.column_config.NumberColumn(format="%+.3g"),
        },
    )
    top = table.iloc[0]
    how = (
        "Shapley values add up to that difference, so regions pushing opposite ways can each carry more than it"
        if method == "ShapleyValueSampling"
        else "each region blacked out alone, so the parts need not add up to it"
    )
    small = table[~table["separable"]]["region"].tolist()
    st.caption(
        f"Shares add up to 100% of the map's total |attribution|, whatever the signs: {top['region']} carries "
        f"{top['share']:.0%} and {top['direction']} the output ({top['attribution']:+.3g}, against this image's "
        f"f(x) − f(black) = {difference:+.3g}; {how})."
        + (
            f" Too small in the model's input for a map to tell apart from their neighbours: {', '.join(small)}."
            if small
            else ""
        )
    )
