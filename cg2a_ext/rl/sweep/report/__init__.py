"""The report of a sweep (``python python/report.py SWEEP_DIR``).

    collect     the runs of a sweep root: identity, method, status, steps
    zero_shot   zero-shot evaluation of finished runs, cached in each run folder
    summary     table cells (mean +- std over seeds), aggregates, probability of improvement, retention
    stats       IQM / mean / probability of improvement with stratified-bootstrap intervals (rliable estimators)
    tables      markdown tables in the CG2A paper's layouts, the paper's numbers beside ours
    figures     learning curves, gradient diagnostics, aggregate intervals (PNG)
    main        the command line: evaluate, then write report.md, report.json and the figures
"""
