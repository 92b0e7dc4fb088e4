"""Pixel attribution maps: where the model looks.

`methods` (the registry of captum's and Eve's methods, each computed beside its record), `attention`
(a Vision Transformer's attention maps), `regions` (the regions region methods and region tables use),
`quality` (how faithful, concentrated, stable and localised maps are: one quality table) and `report`
(maps, quality and region shares of chosen images, as the `maps` command writes them).
"""
