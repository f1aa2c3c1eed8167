"""Test bits/dim of a checkpoint: python evaluate.py ckpt=outputs/train/<run>/checkpoints/last.ckpt"""

import hydra

from rgflow_vision.training import config, tasks


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@config.entry_point
def main(cfg):
    return tasks.evaluate(cfg)


if __name__ == "__main__":
    main()
