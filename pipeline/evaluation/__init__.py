"""After each task: zero-shot evaluation (``evaluate``), the summary metrics (``metrics``) and a run's report
(``report``)."""
