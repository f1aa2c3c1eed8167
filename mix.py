"""Multi-scale mixing from a checkpoint: python mix.py ckpt=... hc=3 (hc=all: every cut)"""

import hydra

from rgflow_vision.training import config, tasks


@hydra.main(version_base="1.3", config_path="conf", config_name="mix")
@config.entry_point
def main(cfg):
    return tasks.mix(cfg)


if __name__ == "__main__":
    main()
