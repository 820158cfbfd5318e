"""Sweeps: a grid of training runs on Ray, its live progress, and the report that summarises it.

    grid        the grid (tasks x algorithms x seeds x options) from a command line or a TOML file,
                expanded into runs with stable folder names
    manifest    sweep.json (what the sweep is) and the event log (what happened to each run)
    run_state   what a run folder holds: new / partial / finished, its latest step, speed and evaluation
    worker      one run inside a Ray worker: new or resumed, its errors sorted into retryable or not
    runner      the driver: Ray start-up, scheduling, retries, skip, stop on Ctrl-C
    progress    the live table of the runs
    main        the ``cg2a-sweep`` command line
    paper_numbers  the published returns the report sets beside the sweep's
    report      zero-shot evaluation of finished runs, tables, aggregates, figures, one markdown page

Ray is an optional dependency (``pip install ".[sweep]"``); only ``runner`` and ``main`` import it.
"""
