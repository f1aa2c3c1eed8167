"""Multi-scale mixing from a checkpoint: python mix.py ckpt=... hc=3 (hc=all: every cut)"""

import hydra

from rgflow_vision.apps import common, pictures


@hydra.main(version_base="1.3", config_path="conf", config_name="mix")
@common.entry_point
def main(cfg):
    return pictures.mix(cfg)


if __name__ == "__main__":
    common.launch(main)
