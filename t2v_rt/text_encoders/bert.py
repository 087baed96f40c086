"""The PyTorch reference of the pretrained text encoder: a compact BERT (embeddings, post-LN
transformer layers with erf-GELU) + mean pooling over the attention mask + L2 normalisation,
as sentence-transformers runs all-MiniLM-L6-v2. Frozen (eval, no gradients); used to export
the ONNX graph (:mod:`t2v_rt.text_encoders.export`) and by the tests. Needs PyTorch.

Submodule names follow the checkpoint's (``embeddings.word_embeddings``,
``encoder.layer.N.attention.self.query``, ...), so the weights load by name, strictly: every
tensor of the file is used, with its shape, except the BERT pooler (``pooler.dense``: not part
of the sentence embedding) and the ``position_ids`` buffer (checked to be 0..511).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from t2v_rt.errors import ConfigError

# Tensors of the checkpoint that the sentence embedding does not use.
UNUSED = ("pooler.dense.weight", "pooler.dense.bias", "embeddings.position_ids")
NEG = -10000.0      # additive attention mask of padding (BERT's; exp() of it is 0 in float32)


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_json(cls, cfg: dict) -> BertConfig:
        if cfg.get("model_type") != "bert" or cfg.get("hidden_act") != "gelu" or \
                cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ConfigError("the text encoder's config.json is not a BERT with absolute "
                              "positions and erf-GELU; this loader reads only that")
        return cls(**{k: cfg[k] for k in cls.__dataclass_fields__})


class Embeddings(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:      # [B, L] -> [B, L, H]
        length = ids.shape[1]
        x = (self.word_embeddings(ids) + self.position_embeddings.weight[:length]
             + self.token_type_embeddings.weight[0])           # one segment: type 0
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.heads, self.head_dim = c.num_attention_heads, c.hidden_size // c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, h = x.shape                                      # bias: [B, 1, 1, L]

        def split(t):                                          # [B, L, H] -> [B, heads, L, d]
            return t.view(b, n, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + bias
        out = scores.softmax(dim=-1) @ v
        return out.transpose(1, 2).reshape(b, n, h)


class Dense(nn.Module):
    """``dense`` then, post-LN, ``LayerNorm(dense(x) + residual)``."""

    def __init__(self, n_in: int, n_out: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(n_in, n_out)
        self.LayerNorm = nn.LayerNorm(n_out, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.self = SelfAttention(c)
        self.output = Dense(c.hidden_size, c.hidden_size, c.layer_norm_eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, bias), x)


class Intermediate(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))                            # erf GELU ("gelu" in BERT)


class Layer(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.attention = Attention(c)
        self.intermediate = Intermediate(c)
        self.output = Dense(c.intermediate_size, c.hidden_size, c.layer_norm_eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, bias)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(c) for _ in range(c.num_hidden_layers))


class SentenceEncoder(nn.Module):
    """input_ids, attention_mask (int64 ``[B, L]``) -> sentence embedding ``[B, H]`` float32:
    BERT's last hidden states, averaged over the tokens the mask keeps, L2-normalised."""

    def __init__(self, c: BertConfig = BertConfig()):
        super().__init__()
        self.config = c
        self.embeddings = Embeddings(c)
        self.encoder = Encoder(c)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(torch.float32)                 # [B, L]
        bias = ((1.0 - mask) * NEG)[:, None, None, :]           # [B, 1, 1, L]
        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, bias)
        summed = (x * mask[:, :, None]).sum(dim=1)              # [B, H]
        pooled = summed / mask.sum(dim=1, keepdim=True).clamp(min=1e-9)
        return F.normalize(pooled, p=2.0, dim=1)


def load_encoder(folder: Path) -> SentenceEncoder:
    """The encoder of the model folder (``config.json`` + ``model.safetensors``), frozen. A
    checkpoint with a missing, extra or misshapen tensor is a :class:`ConfigError` naming it."""
    import json

    from safetensors.torch import load_file

    folder = Path(folder)
    config = BertConfig.from_json(json.loads((folder / "config.json").read_text()))
    tensors = load_file(str(folder / "model.safetensors"))
    pos = tensors.pop("embeddings.position_ids", None)
    if pos is not None and not torch.equal(pos.flatten(), torch.arange(pos.numel())):
        raise ConfigError("the text encoder's embeddings.position_ids are not 0, 1, 2, ...")
    for name in UNUSED:
        tensors.pop(name, None)
    model = SentenceEncoder(config)
    want = model.state_dict()
    missing = sorted(want.keys() - tensors.keys())
    extra = sorted(tensors.keys() - want.keys())
    bad = sorted(k for k in want.keys() & tensors.keys() if want[k].shape != tensors[k].shape)
    if missing or extra or bad:
        what = [f"missing {missing[:3]}" if missing else "", f"unexpected {extra[:3]}" if extra
                else "", f"shape of {bad[:3]}" if bad else ""]
        raise ConfigError(f"the text encoder's weights do not fit BERT ({config.num_hidden_layers}"
                          f" layers, {config.hidden_size} wide): {'; '.join(w for w in what if w)}")
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    return model.eval().requires_grad_(False)


__all__ = ["UNUSED", "BertConfig", "SentenceEncoder", "load_encoder"]
