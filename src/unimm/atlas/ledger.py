"""A run's FLOP ledger as the atlas reports it: its ``ledger.json`` read against the atlas's ``[budget]`` settings.

Every item is a count (``unimm/train/ledger.py``): the run's own preparation by item, the shared tokenizer it
loaded, the frozen encoder charged once per distinct input, the training steps. ``total`` is every FLOP that
went into the run's model, the shared tokenizer included when it is charged to the run and left out (one
separate line of the report) when it is not. ``budgeted`` is what the main budget paid for: in the ``scratch``
regime the whole total, in the ``pretrained`` regime the frozen encoder and the training steps, preparation
(and a charged shared tokenizer) being the ``side`` line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class RunLedger:
    regime: str  # scratch | pretrained
    preparation: dict[str, float]  # the run's own preparation, by item
    shared: dict[str, float | None]  # shared parts it loaded (codec.tokenizer), None when unknown
    shared_charged: bool  # charged to the run (else a separate line)
    encoders: float  # the frozen encoder, once per distinct input
    training: float | None  # the training steps (None when they were not counted)

    @classmethod
    def read(cls, ledger: dict[str, Any], settings: dict[str, Any]) -> RunLedger:
        return cls(
            regime=settings["regime"],
            preparation={k: float(v) for k, v in ledger["preparation"].items()},
            shared={k: v["flops"] for k, v in ledger["shared"].items()},
            shared_charged=settings["shared_tokenizer"] == "charged",
            encoders=float(ledger["frozen_encoders"]["flops"]),
            training=ledger["training_steps"]["flops"],
        )

    @property
    def prep_total(self) -> float:
        return sum(self.preparation.values())

    @property
    def shared_total(self) -> float | None:
        values = list(self.shared.values())
        return None if None in values else sum(values)

    def parts(self) -> dict[str, float | None]:
        """The items summed into ``total``, named as the report names them."""
        out: dict[str, float | None] = {f"preparation: {k}": v for k, v in self.preparation.items()}
        if self.shared_charged:
            out.update({f"shared: {k}": v for k, v in self.shared.items()})
        return {**out, "frozen encoders (once per input)": self.encoders, "training steps": self.training}

    @property
    def total(self) -> float | None:
        values = list(self.parts().values())
        return None if None in values else sum(values)

    @property
    def side(self) -> float | None:
        """The pretrained regime's side line: the run's preparation and a charged shared tokenizer."""
        if self.regime != "pretrained":
            return None
        shared = (self.shared_total or 0.0) if self.shared_charged else 0.0
        return self.prep_total + shared

    @property
    def budgeted(self) -> float | None:
        """What the main budget paid for."""
        if self.regime == "scratch" or self.training is None:
            return self.total
        return self.encoders + self.training
