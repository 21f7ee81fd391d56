"""`make bench`: ``run`` writes BENCHMARKS.md from the sections ``generate``, ``train`` and ``data``; ``common`` holds
what they share."""
