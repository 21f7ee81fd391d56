"""CLTS's parts (``gift train --method clts``): frozen CLIP features (``features``), task heads and a task router
(``heads``) and the memory table (``memory``); its loop and report are in ``pipeline.training`` (``clts_run``,
``clts_report``)."""
