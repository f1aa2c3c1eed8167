"""Observables of a trained lattice flow against the known values: python lattice.py ckpt=latest n=16384"""

import hydra

from rgflow_vision.apps import common
from rgflow_vision.training import lattice_tasks


@hydra.main(version_base="1.3", config_path="conf", config_name="lattice")
@common.entry_point
def main(cfg):
    return lattice_tasks.lattice(cfg)


if __name__ == "__main__":
    common.launch(main)
