"""Sample a grid from a checkpoint: python sample.py ckpt=... n=64 temperature=0.8"""

import hydra

from rgflow_vision.apps import common, pictures


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
@common.entry_point
def main(cfg):
    return pictures.sample(cfg)


if __name__ == "__main__":
    common.launch(main)
