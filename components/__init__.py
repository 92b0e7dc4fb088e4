"""Rendering for the Eve app: plotly figures, widget groups, the session-state keys and the
cache layer over the engine (`loaders`). Nothing here trains or samples on its own."""
