"""cg2a_ext.rl: SAC with CG2A and its baselines on the DMControl Generalization Benchmark.

One module per concern:

    config        TrainConfig (one typed field per option) and the presets
    algorithms    the algorithm registry: one module per algorithm
    agent         the SAC core and its networks
    envs          DMC-GB environments (train and the four test modes)
    augmentations image augmentations (shift, random conv, overlay, ...)
    image_bank    the images overlay augmentations blend in
    replay        the frame replay buffer (stores and samples only)
    trainer       the training loop
    run_dir       run folders: lock, layout, resume rules
    checkpoint    atomic checkpoints with fallback
    run_logging   CSV / TensorBoard logs and the progress display
    evaluation    zero-shot evaluation on the test modes
    plotting      learning curves and gradient diagnostics
"""
