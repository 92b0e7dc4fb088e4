"""Scores: how much of a model's decision a feature explains, S(A) = Var(E[Y|A]) / Var(Y).

`tvd` (the paper's estimator from data), `service` (the one place that turns a dataset, a model, a
split and features into scores), `generator` (the generator path: scores from conditional samples),
`debias` (generator scores debiased by the real subjects), `joint` (sets of features: joint and added
scores, Shapley effects).
"""
