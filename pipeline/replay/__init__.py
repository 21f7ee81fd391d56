"""What a run replays: the synthetic pool and its per-task draws (``synthetic``), the image streams the loop and the
methods read batches from (``streams``), and the caption sets rendered for replay and kept as memory (``captioned``)."""
