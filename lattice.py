"""Observables of a trained lattice flow against the known values: python lattice.py ckpt=latest n=16384"""

import hydra

from rgflow_vision.apps import common
from rgflow_vision.lattice import LatticeFlowModule
from rgflow_vision.lattice.report import report_checkpoint


@hydra.main(version_base="1.3", config_path="conf", config_name="lattice")
@common.entry_point
def main(cfg):
    module, path = common.load_checkpoint(cfg, LatticeFlowModule)
    return report_checkpoint(cfg, module, path)


if __name__ == "__main__":
    common.launch(main)
