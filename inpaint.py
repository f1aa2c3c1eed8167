"""O(log N) inpainting from a checkpoint: python inpaint.py ckpt=... mask=box size=8"""

import hydra

from rgflow_vision.apps import common, pictures


@hydra.main(version_base="1.3", config_path="conf", config_name="inpaint")
@common.entry_point
def main(cfg):
    return pictures.inpaint(cfg)


if __name__ == "__main__":
    common.launch(main)
