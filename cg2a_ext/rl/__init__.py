"""cg2a_ext.rl: SAC with CG2A and its baselines on the DMControl Generalization Benchmark.

One module per concern:

    config        TrainConfig (one typed field per option), the presets, resume rules
    algorithms    the algorithm registry: one module per algorithm (sac, drq, svea, ac, cg2a, baselines)
    agent         the SAC core and its networks
    precision     fp32 / tf32 / bf16 arithmetic of the networks
    envs          DMC-GB environments (train and the four test modes)
    env_stepper   environment steps in a worker thread, overlapped with the update
    augmentations image augmentations (shift, random conv, overlay, ...)
    image_bank    the images overlay augmentations blend in
    replay        the frame replay buffer (stores and samples only)
    seeding       named seed streams of one run seed
    trainer       the training loop
    run_dir       run folders: layout, lock, new-run and resume rules, status
    checkpoint    atomic checkpoints, the last two kept, corrupt ones skipped
    run_logging   CSV / TensorBoard logs and the progress display
    evaluation    zero-shot evaluation on the test modes
    plotting      learning curves and gradient diagnostics
    host_memory   glibc settings that keep freed host memory for reuse
    sweep         grids of runs on Ray, and the report over them
    train_main, eval_main, plot_main   the cg2a-train / cg2a-eval / cg2a-plot commands
"""
