"""Observables of a trained lattice flow against the known values: python lattice.py ckpt=latest n=16384"""

import hydra

from rgflow_vision.apps import common, lattice


@hydra.main(version_base="1.3", config_path="conf", config_name="lattice")
@common.entry_point
def main(cfg):
    return lattice.report(cfg)


if __name__ == "__main__":
    common.launch(main)
