"""Small layers shared by the backbones and agents."""

from __future__ import annotations

from torch import Tensor, nn

from lit_seqrl.ops.dropout import dropout


class Dropout(nn.Dropout):
    """``nn.Dropout`` with :func:`lit_seqrl.ops.dropout.dropout`'s cheaper CPU masks."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)
