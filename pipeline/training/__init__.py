"""Stage 2: the training loop (``train``), one step (``step``), its configuration (``config``), run directories
(``rundir``), loss terms (``losses``), the replay streams (``replay``) and the synthetic pool (``synthetic``)."""
