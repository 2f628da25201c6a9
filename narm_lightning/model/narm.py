"""NARM as a plain ``nn.Module``: usable without Lightning or Hydra, parameter names as in RecBole.

Li et al., "Neural Attentive Session-based Recommendation", CIKM 2017, following RecBole's
``recbole/model/sequential_recommender/narm.py`` so a RecBole state dict loads directly and gives the
same scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from narm_lightning.config.schema import GRU_IMPLS
from narm_lightning.model.dropout import BitDropout
from narm_lightning.model.gru import FusedGRU
from narm_lightning.model.lookup import lookup


class NARM(nn.Module):
    """Encoder (GRU + attention) and bilinear decoder over all item embeddings.

    ``n_items`` counts the padding row 0, exactly like RecBole's ``dataset.item_num``.
    """

    def __init__(
        self,
        n_items: int,
        embedding_size: int = 64,
        hidden_size: int = 128,
        n_layers: int = 1,
        dropout_probs: Sequence[float] = (0.25, 0.5),
        gru_impl: str = "auto",
    ) -> None:
        super().__init__()
        if gru_impl not in GRU_IMPLS:
            raise ValueError(f"gru_impl {gru_impl!r}; expected one of {GRU_IMPLS}")
        if len(dropout_probs) != 2:
            raise ValueError(f"dropout_probs needs two values, got {list(dropout_probs)}")
        self.n_items = n_items
        self.embedding_size = embedding_size
        self.hidden_size = hidden_size
        self.n_layers = n_layers
        self.item_embedding = nn.Embedding(n_items, embedding_size, padding_idx=0)
        self.emb_dropout = BitDropout(dropout_probs[0], inplace=True)  # its input: the lookup's fresh output
        # nn.GRU's parameters and names (RecBole state dicts load); its training forward is the fused one where
        # gru_impl says (auto: on CPU only; torch: nn.GRU itself, which TorchScript and ONNX export need)
        self.gru = (nn.GRU(embedding_size, hidden_size, n_layers, bias=False, batch_first=True) if gru_impl == "torch"
                    else FusedGRU(embedding_size, hidden_size, n_layers, cpu_only=gru_impl == "auto"))
        self.a_1 = nn.Linear(hidden_size, hidden_size, bias=False)
        self.a_2 = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_t = nn.Linear(hidden_size, 1, bias=False)
        self.ct_dropout = BitDropout(dropout_probs[1], inplace=True)  # its input: cat's fresh output
        self.b = nn.Linear(2 * hidden_size, embedding_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal for embedding and linear weights; the GRU keeps PyTorch's init (as RecBole)."""
        for module in self.modules():
            if isinstance(module, (nn.Embedding, nn.Linear)):
                nn.init.xavier_normal_(module.weight)

    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """Session vectors ``[B, E]`` for left-aligned, zero-padded ``item_seq`` ``[B, L]``.

        Columns past a row's length never influence it: the GRU is causal, the global vector is read at
        ``len - 1`` and the attention mask zeroes padded positions. So batches may be trimmed to their
        longest row without changing any score.
        """
        if not torch.jit.is_scripting():  # (TorchScript compiles none of this block: serving scripts nn.GRU's path)
            if self._by_length(item_seq):
                return self._infer(item_seq, item_seq_len)
            if isinstance(self.gru, FusedGRU):  # time-major, a tensor for each reader: FusedGRU.forward_readers
                x = self.emb_dropout(lookup(self.item_embedding, item_seq.t()))
                gate_in, sum_in, c_global = self.gru.forward_readers(x, (item_seq_len - 1).clamp(min=0))
                return self._attend(gate_in, sum_in, c_global, item_seq, time_major=True)
        gru_out, _ = self.gru(self.emb_dropout(self.item_embedding(item_seq)))
        return self._attend(gru_out, gru_out, self._last_state(gru_out, item_seq_len), item_seq, time_major=False)

    def _last_state(self, gru_out: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """The global encoder: the GRU's output ``[B, T, H]`` at each row's last item ``[B, H]``."""
        last = (item_seq_len - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, gru_out.size(-1))
        return gru_out.gather(1, last).squeeze(1)

    def _by_length(self, item_seq: torch.Tensor) -> bool:
        """Inference (eval mode, no gradient) on CPU through the fused GRU (``gru_impl`` auto or fused) takes
        ``_infer``. A GPU keeps cuDNN's padded forward, ``gru_impl=torch`` (TorchScript, ONNX export) nn.GRU's."""
        return (isinstance(self.gru, FusedGRU) and item_seq.device.type == "cpu" and item_seq.dim() == 2
                and item_seq.size(1) > 0 and not self.training and not torch.is_grad_enabled())

    def _infer(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """``forward``'s numbers (to fp32 rounding) in ~70% of its time on CPU (ml-100k's 943 test histories:
        53 -> 38 ms): dropout is off, so the embedding lookup and the GRU's input GEMM fuse; padded steps are
        skipped (``FusedGRU.forward_by_length``)."""
        # the attention reads every non-zero id, even one past item_seq_len (as RecBole's): each row's GRU runs
        # to its last non-zero id or its length, whichever is later
        positions = torch.arange(1, item_seq.size(1) + 1, device=item_seq.device)
        run = torch.maximum(item_seq_len, (item_seq.gt(0) * positions).amax(1))
        gru_out = self.gru.forward_by_length(item_seq, run, table=self.item_embedding.weight)
        return self._attend(gru_out, gru_out, self._last_state(gru_out, item_seq_len), item_seq, time_major=False)

    def _attend(self, gate_in: torch.Tensor, sum_in: torch.Tensor, c_global: torch.Tensor, item_seq: torch.Tensor,
                time_major: bool) -> torch.Tensor:
        """The local encoder (attention over the steps) and the bilinear decoder's B, from the GRU's output as the
        attention's gate reads it (``[B, T, H]``, or ``[T, B, H]`` when ``time_major``: the gate is computed row
        by row, in either order) and as its weighted sum reads it (``[B, T, H]``), and the global encoder
        ``c_global`` ``[B, H]``."""
        # RecBole's attention: no softmax, sigmoid gate, padded positions weigh exactly 0. RecBole masks the
        # [B, T, H] gate before v_t; v_t is linear, so masking its [B, T, 1] output is the same number, 128x fewer
        # multiplications. In place: neither a_1's output nor the sum is needed by autograd (sigmoid keeps its
        # own output): two fewer [B, T, H] tensors. The weighted sum over steps is one batched GEMM.
        query = self.a_2(c_global).unsqueeze(0 if time_major else 1)
        alpha = self.v_t(self.a_1(gate_in).add_(query).sigmoid_()).squeeze(-1)
        if time_major:
            alpha = alpha.t()
        alpha = alpha * item_seq.gt(0).to(alpha.dtype)
        c_local = torch.bmm(alpha.unsqueeze(1), sum_in.to(alpha.dtype)).squeeze(1)
        return self.b(self.ct_dropout(torch.cat([c_local, c_global], dim=1)))

    def full_scores(self, session: torch.Tensor) -> torch.Tensor:
        """Scores of every item (padding column 0 included, as RecBole's CE uses them) ``[B, n_items]``."""
        return session @ self.item_embedding.weight.t()

    def predict(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """Full-sort scores for ranking; column 0 (padding) is set to ``-inf`` so it never ranks."""
        scores = self.full_scores(self(item_seq, item_seq_len))
        scores[:, 0] = float("-inf")
        return scores
