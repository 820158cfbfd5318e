"""The training core: the SAC agent, replay, augmentations, overlay images, evaluation and the training loop."""
