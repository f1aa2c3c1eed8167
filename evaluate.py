"""Test bits/dim of a checkpoint: python evaluate.py ckpt=outputs/train/<run>/checkpoints/last.ckpt"""

import hydra

from rgflow_vision.apps import common, train


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@common.entry_point
def main(cfg):
    return train.evaluate(cfg)


if __name__ == "__main__":
    common.launch(main)
