"""Images of what an algorithm sees at an evaluation (SGQN's saliency and masks, SMG's reconstructions), saved as
PNG grids in ``<run>/images/step_<N>/<name>.png``."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch

EVALUATION_IMAGE_FRAMES = 4       # observations handed to the algorithm's evaluation_images


def image_grid(images: np.ndarray, where: str = "image") -> np.ndarray:
    """[N, H, W, 3] uint8 -> one [rows*H, cols*W, 3] image, N tiles in a near-square grid."""
    a = np.asarray(images)
    if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3 or a.shape[0] == 0:
        raise ValueError(f"{where}: expected a non-empty uint8 array [N, H, W, 3], got {a.dtype} {a.shape}")
    n, h, w, _ = a.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = a[i]
    return grid


def evaluation_observations(agent, env, cfg, seeds, step: int, n: int = EVALUATION_IMAGE_FRAMES) -> torch.Tensor:
    """``n`` observations of ``env`` as the policy sees them (float [n, C, H, W] on the agent's device), spread over
    the first part of an episode seeded by the step."""
    stride = max(1, math.ceil(cfg.episode_length / cfg.action_repeat) // n)
    obs, _ = env.reset(seed=seeds.integer("evaluation_images", step, bits=31))
    frames = [obs]
    agent.train(False)
    try:
        t = 0
        while len(frames) < n:
            obs, _, terminated, truncated, _ = env.step(agent.act(obs, sample=False))
            t += 1
            if terminated or truncated:
                frames.append(obs)
                break
            if t % stride == 0:
                frames.append(obs)
    finally:
        agent.train(True)
    x = torch.as_tensor(np.stack(frames), device=agent.device).float()
    with torch.no_grad():
        return agent.policy_view(x)


def save_evaluation_images(agent, eval_envs: dict, cfg, seeds, step: int, images_dir: Path) -> list[Path]:
    """If the agent's algorithm has evaluation images, save them for the first evaluation mode; return the paths."""
    if not eval_envs or not agent.has_evaluation_images:
        return []
    from PIL import Image

    obs = evaluation_observations(agent, next(iter(eval_envs.values())), cfg, seeds, step)
    images = agent.evaluation_images(obs)
    folder = Path(images_dir) / f"step_{step:09d}"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, array in images.items():
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", str(name))
        path = folder / f"{safe}.png"
        Image.fromarray(image_grid(array, f"evaluation_images()[{name!r}]")).save(path)
        out.append(path)
    return out
