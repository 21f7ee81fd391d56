"""What the benchmarks are made of: the catalog (tasks, class names, templates, orders) and the readers of each
dataset family from its real on-disk layout (``mtil``; ``mini`` from scikit-learn's bundled images)."""
