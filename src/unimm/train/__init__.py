from unimm.train.loop import train

__all__ = ["train"]
