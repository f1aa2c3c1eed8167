"""Receptive fields per level from a checkpoint: python receptive_fields.py ckpt=..."""

import hydra

from rgflow_vision.training import config, tasks


@hydra.main(version_base="1.3", config_path="conf", config_name="receptive_fields")
@config.entry_point
def main(cfg):
    return tasks.receptive_fields(cfg)


if __name__ == "__main__":
    main()
