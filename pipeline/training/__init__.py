"""Stage 2's loops and protocols: the fine-tuning loop (``train``), one step (``step``), CLTS's loop (``clts_run``,
``clts_report``), the MTIL / CIL protocols (``protocol``), their configuration (``config``, ``paper_setting``), run
directories (``rundir``), trackers (``tracking``) and the tiny CLIP's pre-training (``pretrain``). The parts they are
built of sit below: loss terms (``pipeline.losses``), the replay streams and synthetic pool (``pipeline.replay``)."""
