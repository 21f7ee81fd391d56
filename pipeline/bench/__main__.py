"""`python -m pipeline.bench` (`make bench`): every section, see ``run.py``."""

from .run import main

main()
