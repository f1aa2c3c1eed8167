"""Train RG-Flow: python train.py [dataset=celeba] [model=paper] [trainer=ddp trainer.devices=8] [logger=wandb]"""

import hydra

from rgflow_vision.apps import common, train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@common.entry_point
def main(cfg):
    return train.train(cfg)


if __name__ == "__main__":
    common.launch(main, allocator=True)
