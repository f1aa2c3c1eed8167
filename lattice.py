"""Observables of a trained lattice flow against the known values: python lattice.py ckpt=latest n=16384"""

import hydra

from rgflow_vision.lattice import LatticeFlowModule
from rgflow_vision.lattice.report import report_checkpoint
from rgflow_vision.training import config
from rgflow_vision.training.checkpoint import load_module


@hydra.main(version_base="1.3", config_path="conf", config_name="lattice")
@config.entry_point
def main(cfg):
    module, path = load_module(cfg.ckpt, LatticeFlowModule)
    return report_checkpoint(cfg, module, path)


if __name__ == "__main__":
    main()
