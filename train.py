"""Train RG-Flow: python train.py [dataset=celeba] [model=paper] [trainer=ddp trainer.devices=8] [logger=wandb]"""

import hydra

from rgflow_vision.training import config, tasks


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@config.entry_point
def main(cfg):
    return tasks.train(cfg)


if __name__ == "__main__":
    config.use_tcmalloc()  # before torch allocates: glibc malloc fragments (see config.py)
    main()
