"""Receptive fields per level from a checkpoint: python receptive_fields.py ckpt=..."""

import hydra

from rgflow_vision.apps import common, pictures


@hydra.main(version_base="1.3", config_path="conf", config_name="receptive_fields")
@common.entry_point
def main(cfg):
    return pictures.receptive_fields(cfg)


if __name__ == "__main__":
    common.launch(main)
