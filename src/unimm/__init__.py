"""unimm: unified multimodal models (understanding + generation) behind one switch on one backbone."""

__version__ = "0.1.0"
