"""The paper's tables: named run settings (``presets``) and running / reusing them into one comparison (``table``)."""
