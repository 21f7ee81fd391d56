"""CLTS's stage 2 (``gift train --method clts``): frozen CLIP features (``features``), task heads and a task router
(``heads``), its loop (``run``), its report (``report``) and memory table (``memory``)."""
