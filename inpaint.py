"""O(log N) inpainting from a checkpoint: python inpaint.py ckpt=... mask=box size=8"""

import hydra

from rgflow_vision.training import config, tasks


@hydra.main(version_base="1.3", config_path="conf", config_name="inpaint")
@config.entry_point
def main(cfg):
    return tasks.inpaint(cfg)


if __name__ == "__main__":
    main()
