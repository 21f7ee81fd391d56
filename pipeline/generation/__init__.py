"""Stage 1: a task's prompts planned (pure) and rendered into a shard set by one of the generators (``sd15``,
``tiny``, ``reference``)."""
