"""A compact image -> CAD code model: a CNN encoder and a GRU decoder over :class:`~lib.cad.tokenizer.CADTokenizer` ids.

Small enough (about 0.64M parameters at ``width=1``) to train on the synthetic DeepCAD renders on a CPU, and a
baseline for bigger vision-language models on the same conversations:

- **Encoder**: four stride-2 conv + GroupNorm + ReLU blocks (widths ``c, 2c, 3c, 4c``, ``c = channels``), then an
  adaptive average pool to an ``8 x 8`` grid of ``4c`` features with a learned position embedding (so any image
  size >= 16 works). The grid's mean gives the GRU's initial hidden state (``tanh`` of a linear map).
- **Decoder**: token embedding -> GRU; each GRU output attends (scaled dot product, Luong style: after the
  GRU, so teacher forcing runs the GRU over the whole sequence at once) over the grid; ``tanh`` of a linear map
  of ``[output; context]`` back to the embedding size is scored against the (tied) token embeddings, scaled
  by ``1 / sqrt(embed_dim)``.
- **Generation** masks logits with :class:`~lib.cad.constrained.CADGrammar` (``constrained=True``), so every
  output decodes to CAD code :func:`~lib.deepcad.cadcode.from_code` parses, trained or not; greedy, sampled or
  beam search.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Doc, Ge, Gt, Interval
from torch import nn

from lib.cad.constrained import CADGrammar, GrammarState
from lib.cad.tokenizer import CADTokenizer
from lib.config import Checked

GRID = 8  # encoder output is pooled to GRID x GRID cells


@dataclass(frozen=True)
class CADVLMConfig(Checked):
    """Sizes of :class:`CADVLM`; ``width`` scales ``channels``, ``embed_dim`` and ``hidden`` together
    (params ~ width^2)."""

    image_size: Annotated[int, Ge(16), Doc("four stride-2 blocks")] = 128
    channels: Annotated[int, Ge(1)] = 32  # CNN width of the first block
    embed_dim: Annotated[int, Ge(1)] = 128
    hidden: Annotated[int, Ge(1)] = 256
    layers: Annotated[int, Ge(1)] = 1
    dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.1
    # generation limit in ids, <bos> and <eos> included (synthetic models: <= ~280)
    max_len: Annotated[int, Ge(1)] = 512
    width: Annotated[float, Gt(0)] = 1.0

    def scaled(self, n: int) -> int:
        """``n`` times ``width``, rounded to a multiple of 4 (at least 4) so the 4 GroupNorm groups divide it."""
        return max(4, round(n * self.width / 4) * 4)


def _block(c_in: int, c_out: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride=2, padding=k // 2), nn.GroupNorm(4, c_out), nn.ReLU())


class ImageEncoder(nn.Module):
    """``[B, 3, H, W]`` -> grid features ``[B, 64, F]`` (with position embedding) and a pooled vector ``[B, F]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        c = channels
        self.blocks = nn.Sequential(_block(3, c, 5), _block(c, 2 * c, 3), _block(2 * c, 3 * c, 3),
                                    _block(3 * c, 4 * c, 3))
        self.features = 4 * c
        self.pos = nn.Parameter(torch.zeros(GRID * GRID, self.features))
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.adaptive_avg_pool2d(self.blocks(images), GRID)  # [B, F, 8, 8]
        grid = x.flatten(2).transpose(1, 2)  # [B, 64, F]
        return grid + self.pos, grid.mean(dim=1)


class CADVLM(nn.Module):
    """Image -> CAD token ids (module docstring). ``forward`` is teacher forcing; ``generate`` decodes."""

    def __init__(self, cfg: CADVLMConfig, vocab_size: int, pad_id: int = 0) -> None:
        super().__init__()
        self.cfg, self.vocab_size, self.pad_id = cfg, int(vocab_size), int(pad_id)
        c, E, H = cfg.scaled(cfg.channels), cfg.scaled(cfg.embed_dim), cfg.scaled(cfg.hidden)
        self.encoder = ImageEncoder(c)
        Fd = self.encoder.features
        self.init_hidden = nn.Linear(Fd, H * cfg.layers)
        self.embed = nn.Embedding(self.vocab_size, E, padding_idx=self.pad_id)
        self.gru = nn.GRU(E, H, num_layers=cfg.layers, batch_first=True,
                          dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.query = nn.Linear(H, Fd, bias=False)
        self.combine = nn.Linear(H + Fd, E)
        self.out_bias = nn.Parameter(torch.zeros(self.vocab_size))
        self.drop = nn.Dropout(cfg.dropout)

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Grid features ``[B, 64, F]`` and the GRU's initial hidden state ``[layers, B, H]``."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"CADVLM: images must be float [B, 3, H, W], got {list(images.shape)}")
        if min(images.shape[-2:]) < 16:
            raise ValueError(f"CADVLM: images are {list(images.shape[-2:])}; need H, W >= 16 (four stride-2 blocks)")
        grid, pooled = self.encoder(images.float())
        h0 = torch.tanh(self.init_hidden(pooled))  # [B, layers * H]
        h0 = h0.view(images.shape[0], self.cfg.layers, -1).transpose(0, 1).contiguous()
        return grid, h0

    def _readout(self, out: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, L, V]`` from GRU outputs ``[B, L, H]`` attending over ``grid`` ``[B, N, F]``."""
        q = self.query(out)  # [B, L, F]
        attn = torch.softmax(q @ grid.transpose(1, 2) / math.sqrt(grid.shape[-1]), dim=-1)  # [B, L, N]
        ctx = attn @ grid  # [B, L, F]
        z = self.drop(torch.tanh(self.combine(torch.cat([out, ctx], dim=-1))))
        # Tied embeddings are N(0, 1) (good GRU inputs); 1/sqrt(E) keeps the initial logits O(1), loss ~ ln V.
        return z @ self.embed.weight.t() * self.embed.embedding_dim ** -0.5 + self.out_bias

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits ``[B, L, V]``; ``logits[:, t]`` scores the token after ``tokens[:, t]``.

        Feed ``ids[:, :-1]`` and score against ``ids[:, 1:]`` (see :func:`cad_loss`).
        """
        if tokens.ndim != 2 or tokens.shape[0] != images.shape[0]:
            raise ValueError(f"CADVLM: tokens must be [B, L] with B = images' {images.shape[0]}, got "
                             f"{list(tokens.shape)}")
        grid, h0 = self.encode(images)
        out, _ = self.gru(self.drop(self.embed(tokens)), h0)
        return self._readout(out, grid)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, pad_id: int | None = None) -> torch.Tensor:
        """Mean cross-entropy of ``logits [B, L, V]`` against ``targets [B, L]``, ``pad_id`` positions ignored."""
        return cad_loss(logits, targets, self.pad_id if pad_id is None else pad_id)

    def _step(self, prev: torch.Tensor, h: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoding step: logits ``[B, V]`` for the token after ``prev [B]`` and the new hidden state."""
        out, h = self.gru(self.embed(prev)[:, None], h)
        return self._readout(out, grid)[:, 0], h

    @torch.no_grad()
    def generate(self, images: torch.Tensor, tokenizer: CADTokenizer, max_len: int | None = None,
                 greedy: bool = True, beam: int = 1, constrained: bool = True, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> list[list[int]]:
        """Token ids (``<bos> ... <eos>``) for each image.

        ``constrained`` masks every step with :class:`CADGrammar` (``max_len`` included), so each result decodes
        to parseable CAD code; unconstrained rows that reach ``max_len`` come back without ``<eos>`` (decode
        then raises, i.e. a parse failure). ``greedy=False`` samples at ``temperature`` with ``generator``;
        ``beam > 1`` runs beam search per image (ranked by mean log-probability per token). The model is put in
        eval mode for the call and restored after.
        """
        max_len = int(max_len or self.cfg.max_len)
        if beam < 1:
            raise ValueError(f"generate: beam={beam} must be >= 1")
        grammar = CADGrammar(tokenizer, max_len if constrained else None)
        was_training = self.training
        self.eval()
        try:
            grid, h = self.encode(images)
            if beam > 1:
                return [self._beam_one(grid[i:i + 1], h[:, i:i + 1], tokenizer, grammar, max_len, beam, constrained)
                        for i in range(images.shape[0])]
            return self._sample(grid, h, tokenizer, grammar, max_len, greedy, constrained, temperature, generator)
        finally:
            self.train(was_training)

    def _mask(self, logits: torch.Tensor, states: list[GrammarState], grammar: CADGrammar) -> torch.Tensor:
        allowed = torch.from_numpy(np.stack([grammar.allowed(s) for s in states])).to(logits.device)
        return logits.masked_fill(~allowed, float("-inf"))

    def _sample(self, grid, h, tok: CADTokenizer, grammar: CADGrammar, max_len: int, greedy: bool,
                constrained: bool, temperature: float, generator) -> list[list[int]]:
        B = grid.shape[0]
        seqs = [[tok.bos_id] for _ in range(B)]
        start = grammar.advance(grammar.initial(), tok.bos_id)
        states = [start] * B
        done = [False] * B
        prev = torch.full((B,), tok.bos_id, dtype=torch.long, device=grid.device)
        for _ in range(max_len - 1):
            logits, h = self._step(prev, h, grid)
            if constrained:
                logits = self._mask(logits, states, grammar)
            if greedy:
                nxt = logits.argmax(dim=-1)
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator)[:, 0]
            for i in range(B):
                if done[i]:
                    nxt[i] = tok.pad_id
                    continue
                t = int(nxt[i])
                seqs[i].append(t)
                if constrained:
                    states[i] = grammar.advance(states[i], t)
                done[i] = t == tok.eos_id
            if all(done):
                break
            prev = nxt
        return seqs

    @torch.no_grad()
    def beam_candidates(self, images: torch.Tensor, tokenizer: CADTokenizer, n: int, max_len: int | None = None,
                        constrained: bool = True) -> list[list[list[int]]]:
        """Per image, up to ``n`` token id sequences of a width-``n`` beam search, best (mean log-probability per
        token) first; the first is what ``generate(beam=n)`` returns. For best-of-N scoring."""
        max_len = int(max_len or self.cfg.max_len)
        grammar = CADGrammar(tokenizer, max_len if constrained else None)
        was_training = self.training
        self.eval()
        try:
            grid, h = self.encode(images)
            return [self._beam_pool(grid[i:i + 1], h[:, i:i + 1], tokenizer, grammar, max_len, n, constrained)[:n]
                    for i in range(images.shape[0])]
        finally:
            self.train(was_training)

    def _beam_one(self, grid, h, tok: CADTokenizer, grammar: CADGrammar, max_len: int, beam: int,
                  constrained: bool) -> list[int]:
        """Beam search for one image (``grid [1, N, F]``, ``h [layers, 1, H]``)."""
        return self._beam_pool(grid, h, tok, grammar, max_len, beam, constrained)[0]

    def _beam_pool(self, grid, h, tok: CADTokenizer, grammar: CADGrammar, max_len: int, beam: int,
                   constrained: bool) -> list[list[int]]:
        """Beam search for one image: the finished sequences (else the alive ones), best first."""
        start = grammar.advance(grammar.initial(), tok.bos_id)
        alive = [([tok.bos_id], start, 0.0)]  # (ids, grammar state, sum log-prob)
        finished: list[tuple[list[int], float]] = []
        for _ in range(max_len - 1):
            n = len(alive)
            prev = torch.tensor([a[0][-1] for a in alive], dtype=torch.long, device=grid.device)
            logits, h_new = self._step(prev, h, grid.expand(n, -1, -1))
            if constrained:
                logits = self._mask(logits, [a[1] for a in alive], grammar)
            logp = torch.log_softmax(logits, dim=-1)
            top = torch.topk(logp, min(beam, logp.shape[-1]), dim=-1)
            cands = [(alive[i][2] + float(v), i, int(t))
                     for i in range(n) for v, t in zip(top.values[i], top.indices[i], strict=False)
                     if math.isfinite(float(v))]
            cands.sort(key=lambda c: -c[0])
            new_alive, rows = [], []
            for score, i, t in cands:
                ids = alive[i][0] + [t]
                state = grammar.advance(alive[i][1], t) if constrained else alive[i][1]
                if t == tok.eos_id:
                    finished.append((ids, score))
                else:
                    new_alive.append((ids, state, score))
                    rows.append(i)
                if len(new_alive) == beam:
                    break
            if len(finished) >= beam or not new_alive:
                break
            alive, h = new_alive, h_new[:, rows]
        pool = finished or [(a[0], a[2]) for a in alive]
        order = sorted(range(len(pool)), key=lambda i: -pool[i][1] / len(pool[i][0]))  # stable: max() picked first
        return [pool[i][0] for i in order]


def cad_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Mean cross-entropy over non-pad targets (``logits [B, L, V]``, ``targets [B, L]``)."""
    if logits.shape[:2] != targets.shape:
        raise ValueError(f"cad_loss: logits {list(logits.shape)} and targets {list(targets.shape)} disagree on "
                         "[B, L]; feed ids[:, :-1] and score against ids[:, 1:]")
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=pad_id)
