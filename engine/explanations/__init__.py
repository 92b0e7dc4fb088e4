"""Per-subject explanations in human terms: `anchors` (the shortest rule on the features that keeps
the model's decision) and `counterfactual` (a subject's slice with one feature changed)."""
