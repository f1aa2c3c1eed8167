"""Sample a grid from a checkpoint: python sample.py ckpt=... n=64 temperature=0.8"""

import hydra

from rgflow_vision.training import config, tasks


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
@config.entry_point
def main(cfg):
    return tasks.sample(cfg)


if __name__ == "__main__":
    main()
