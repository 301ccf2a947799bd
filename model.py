"""
The AMT model: a GPT-2 language model over MIDI event tokens, written out by hand.
It knows nothing about music; tokens are just ids below config.vocab_size.

References:
1) OpenAI's GPT-2 TensorFlow code: https://github.com/openai/gpt-2/blob/master/src/model.py
2) Hugging Face GPT2LMHeadModel (tests/test_model.py checks that our logits equal it)
3) karpathy/nanoGPT model.py, which this file follows, plus a KV cache for generation
"""

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class GPTConfig:
    """The model's shape, declared here once: train.py's config and a checkpoint's model_args take
    these fields. The defaults are GPT-2 (tests/test_model.py checks its logits against Hugging
    Face's); pos, mlp, qk_norm, tie_head and zero_init are the speedrun's levers (BENCHMARKS.md)."""

    block_size: int = 1024  # longest context
    vocab_size: int = 512  # the tokenizer's VOCAB_SIZE must fit in here
    n_layer: int = 6
    n_head: int = 8
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm, like GPT-2; False is a bit faster
    # > 0: also add a learned embedding of the first cond_prefix tokens (the attribute prefix) at
    # every position, besides reading them in the sequence
    cond_prefix: int = 0
    pos: str = "learned"  # "learned": absolute position embeddings; "rope": rotary, on q and k
    mlp: str = "gelu"  # "gelu" (tanh approximation, as GPT-2); "relu2": squared ReLU
    qk_norm: bool = False  # RMS-normalise queries and keys per head before attention
    tie_head: bool = True  # one matrix embeds and unembeds; False: a head of its own
    # the head (untied only) and every projection into the residual stream start at zero
    zero_init: bool = False

    @classmethod
    def from_settings(cls, settings, **overrides):
        """A GPTConfig from anything that names its fields: a dict (a checkpoint's model_args, a
        config file's globals) or an object (train.py's Config). Other names are ignored, a field
        left out keeps its default, and overrides win."""
        get = settings.get if isinstance(settings, dict) else lambda k, d: getattr(settings, k, d)
        return cls(**{f.name: get(f.name, f.default) for f in fields(cls)} | overrides)


class KVCache:
    """Keys and values of every layer for the positions seen so far, so that generation feeds
    one new token per step instead of the whole sequence. Buffers are preallocated to block_size
    at first use, in the dtype the attention produces (bf16 under autocast)."""

    def __init__(self, n_layer, block_size):
        self.block_size = block_size
        self.layers = [None] * n_layer  # per layer (k, v), each (B, nh, block_size, hs)
        self.pos = 0  # how many positions are filled; the next token's position

    def update(self, layer, k, v):
        """Store k, v (B, nh, T, hs) at positions pos..pos+T-1 and return the keys and values of
        positions 0..pos+T-1. pos itself advances in GPT.forward, after the last layer."""
        B, nh, T, hs = k.shape
        assert self.pos + T <= self.block_size, (
            f"KV cache full: {self.pos}+{T} > block_size {self.block_size}"
        )
        if self.layers[layer] is None:
            self.layers[layer] = (
                k.new_zeros(B, nh, self.block_size, hs),
                v.new_zeros(B, nh, self.block_size, hs),
            )
        cache_k, cache_v = self.layers[layer]
        assert cache_k.size(0) == B, f"KV cache was made for batch {cache_k.size(0)}, got {B}"
        cache_k[:, :, self.pos : self.pos + T] = k
        cache_v[:, :, self.pos : self.pos + T] = v
        return cache_k[:, :, : self.pos + T], cache_v[:, :, : self.pos + T]  # (B, nh, pos+T, hs)

    def select(self, rows):
        """Keep only these batch rows (B',) of every layer: the rows whose samples go on."""
        self.layers = [None if kv is None else (kv[0][rows], kv[1][rows]) for kv in self.layers]
        if hasattr(self, "cond"):
            self.cond = self.cond[rows]


def rotary_tables(block_size, head_size, base=10000.0):
    """cos and sin (block_size, head_size / 2) of the rotary angles: pair i of position t turns by t
    * base^(-2i/hs)."""
    inv_freq = base ** (-torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)  # (hs/2,)
    angles = torch.outer(torch.arange(block_size, dtype=torch.float32), inv_freq)  # (T, hs/2)
    return angles.cos(), angles.sin()


def rotate(x, cos, sin):
    """Rotary position embedding of x (B, nh, T, hs) with cos, sin (T, hs/2): each pair (first half,
    second half) of a head turns by its position's angle, so that q . k depends on the distance
    between positions only."""
    x1, x2 = x.float().chunk(2, dim=-1)  # (B, nh, T, hs/2) each
    rotated = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # (B, nh, T, hs)
    return rotated.type_as(x)


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0, (
            f"n_embd {config.n_embd} must be a multiple of n_head {config.n_head}"
        )
        # q, k, v for all heads at once
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.qk_norm = config.qk_norm

    def forward(self, x, kv_cache=None, layer=0, rotary=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)  # each (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        pos = 0 if kv_cache is None else kv_cache.pos  # how many earlier positions are cached
        if self.qk_norm:
            q, k = F.rms_norm(q, (q.size(-1),)), F.rms_norm(k, (k.size(-1),))
        if rotary is not None:  # (cos, sin) of positions pos..; cached keys keep their rotation
            q, k = rotate(q, *rotary), rotate(k, *rotary)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)  # (B, nh, pos+T, hs)
        mask = None
        if pos > 0 and T > 1:
            # is_causal aligns its triangle to the top-left corner, which is wrong when the T
            # queries come after a cached prefix: query i may see keys 0..pos+i (T == 1 sees all)
            mask = torch.ones(T, pos + T, dtype=torch.bool, device=x.device)  # (T, pos+T)
            mask = mask.tril(diagonal=pos)
        dropout = self.dropout if self.training else 0.0
        causal = pos == 0 and T > 1
        y = F.scaled_dot_product_attention(q, k, v, mask, dropout, is_causal=causal)  # (B,nh,T,hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C) heads side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        assert config.mlp in ("gelu", "relu2"), f"mlp {config.mlp!r}: gelu or relu2"
        # GPT-2's gelu (HF "gelu_new", the tanh approximation); or squared ReLU (Primer)
        gelu = config.mlp == "gelu"
        self.act = nn.GELU(approximate="tanh") if gelu else lambda h: F.relu(h).square()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-LN transformer block: LayerNorm before each sublayer, residual around it."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)  # eps 1e-5, as GPT-2
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, kv_cache=None, layer=0, rotary=None):
        x = x + self.attn(self.ln_1(x), kv_cache, layer, rotary)  # (B, T, C)
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return x


def sample_logits(logits, *, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Pick one next token per row of logits (B, V) -> (B, 1). temperature <= 1e-6 is greedy.
    generator: one torch.Generator for the batch, or a list of one per row, so that a row's sample
    is its own whatever else is in the batch (rows may leave it: GPT.stream)."""
    if temperature <= 1e-6:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]  # (B, 1) k-th largest
        logits = logits.masked_fill(logits < kth, -float("inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        probs = F.softmax(sorted_logits, dim=-1)
        # keep the smallest set of most likely tokens whose mass reaches top_p; the top one stays
        drop = probs.cumsum(dim=-1) - probs > top_p  # (B, V)
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, -float("inf")))
    probs = F.softmax(logits, dim=-1)  # (B, V)
    if not isinstance(generator, list):
        return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
    u = torch.stack([torch.rand((), generator=g, device=g.device) for g in generator])
    u = 1 - u.to(probs.device)  # (B,) in (0, 1]
    below = probs.cumsum(dim=-1) < u[:, None] * probs.sum(dim=-1, keepdim=True)  # (B, V)
    index = below.sum(dim=-1, keepdim=True)
    return index.clamp(max=probs.size(-1) - 1)  # (B, 1) inverse of the CDF


def pinned_window(seq, length, keep_first, pin=None):
    """The context of a sequence seq (B, t) that outgrew it: its first keep_first tokens, then its
    last ones -> (B, length). pin(seq, start) -> (B, keep_first), where given: the pinned tokens of
    a window whose last ones start at seq[:, start] (say, a prefix whose slots follow the music)."""
    if length == seq.size(1):
        return seq
    n_tail = length - keep_first
    first = seq[:, :keep_first] if pin is None else pin(seq, seq.size(1) - n_tail)
    return torch.cat([first, seq[:, -n_tail:]], dim=1)


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        assert config.vocab_size > 0 and config.block_size > 0, f"bad config {config}"
        assert config.pos in ("learned", "rope"), f"pos {config.pos!r}: learned or rope"
        self.config = config
        learned = {}
        if config.pos == "learned":
            learned = dict(wpe=nn.Embedding(config.block_size, config.n_embd))
        self.transformer = nn.ModuleDict(
            dict(  # in GPT-2's order, which the random init follows
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                **learned,
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        if not learned:  # rotary tables: not parameters, and not saved (rebuilt from the config)
            cos, sin = rotary_tables(config.block_size, config.n_embd // config.n_head)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        if config.cond_prefix:  # a table of its own: the sum of the prefix's rows is the condition
            self.transformer["wce"] = nn.Embedding(config.vocab_size, config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_head:  # weight tying: one matrix both ways
            self.transformer.wte.weight = self.lm_head.weight
        # GPT-2 init: normal(0, 0.02), and the projections that write into the residual stream
        # scaled by 1/sqrt(2 * n_layer) so the stream's variance does not grow with depth (two per
        # block). zero_init (modded-nanogpt): those projections and an untied head start at zero, so
        # each block starts as the identity and the first logits are uniform.
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
                if config.zero_init:
                    torch.nn.init.zeros_(p)
        if config.zero_init and not config.tie_head:
            torch.nn.init.zeros_(self.lm_head.weight)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding=True):
        """Number of parameters. The position embeddings are left out by default because they cost
        no matmul FLOPs; the token embeddings stay in, as they are the lm_head weight too."""
        n = sum(p.numel() for p in self.parameters())  # parameters() yields the tied matrix once
        if non_embedding and "wpe" in self.transformer:
            n -= self.transformer.wpe.weight.numel()
        if non_embedding and not self.config.tie_head:  # an untied input table is a lookup
            n -= self.transformer.wte.weight.numel()
        return n

    def flops_per_token(self, seq_len=None):
        """Training FLOPs (forward + backward) per token, as nanoGPT's estimate_mfu (PaLM paper,
        appendix B): 6 per weight (2 forward, 4 backward) plus the attention scores and mixing, 12 *
        L * H * Q * T. Causal attention does half that attention work with flash kernels; like
        nanoGPT we count it all. MFU = flops_per_token() * tokens_per_second / peak_flops."""
        cfg = self.config
        L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, seq_len or cfg.block_size
        return 6 * self.num_params() + 12 * L * H * Q * T

    def forward(self, idx, targets=None, kv_cache=None, reduction="mean"):
        """idx (B, T) token ids -> (logits (B, T, V), loss). targets (B, T) with -1 where a position
        is left out of the loss (padding). reduction='none' gives the per-token loss (B, T), 0 where
        ignored. With kv_cache, idx holds the tokens at positions kv_cache.pos.. and their
        keys/values are added."""
        B, T = idx.size()
        start = 0 if kv_cache is None else kv_cache.pos
        assert start + T <= self.config.block_size, (
            f"sequence of {start}+{T} tokens is longer than block_size {self.config.block_size}"
        )
        x, rotary = self.transformer.wte(idx), None  # (B, T, C)
        if self.config.pos == "learned":
            x = x + self.transformer.wpe(torch.arange(start, start + T, device=idx.device))
        else:
            rotary = self.rope_cos[start : start + T], self.rope_sin[start : start + T]  # (T, hs/2)
        if self.config.cond_prefix:
            # the sequence starts with the prefix; a cache keeps its vector for the later steps
            if start == 0:
                prefix = idx[:, : self.config.cond_prefix]  # (B, P)
                cond = self.transformer.wce(prefix).sum(1, keepdim=True)  # (B, 1, C)
                if kv_cache is not None:
                    kv_cache.cond = cond
            x = x + (cond if start == 0 else kv_cache.cond)
        x = self.transformer.drop(x)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, kv_cache, layer, rotary)  # (B, T, C)
        if kv_cache is not None:
            kv_cache.pos += T
        x = self.transformer.ln_f(x)  # (B, T, C)
        logits = self.lm_head(x)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.view(B * T, -1), targets.reshape(B * T), ignore_index=-1, reduction=reduction
            )
            if reduction == "none":
                loss = loss.view(B, T)
        return logits, loss

    def configure_optimizers(self, *, weight_decay, learning_rate, betas, device_type, muon_lr=0.0):
        """AdamW with weight decay on the 2-D tensors (embeddings and matmul weights) only; biases
        and LayerNorm gains are not decayed. Fused kernel on CUDA. muon_lr > 0: the blocks' matmul
        weights go to Muon at that learning rate instead, the rest stays with AdamW (one Muon
        optimizer holds both)."""
        params = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        hidden = [p for n, p in params if p.dim() == 2 and n.startswith("transformer.h.")]
        hidden = hidden if muon_lr else []
        hidden_ids = {id(p) for p in hidden}
        groups = [
            {
                "params": [p for _, p in params if p.dim() >= 2 and id(p) not in hidden_ids],
                "weight_decay": weight_decay,
            },
            {"params": [p for _, p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        if not muon_lr:
            return torch.optim.AdamW(
                groups, lr=learning_rate, betas=betas, fused=(device_type == "cuda")
            )
        groups.append(
            dict(params=hidden, weight_decay=0.0, muon=True, lr_scale=muon_lr / learning_rate)
        )
        return Muon(groups, lr=learning_rate, betas=betas)

    @torch.no_grad()
    def stream(self, idx, *, logits_hook=None, uncond_idx=None, guidance=1.0, keep_first=1, **pick):
        """Sample after idx (B, T), one token per row per step: yields (B, 1) for as long as the
        caller asks, with one KV cache for the whole sample (call model.eval() first). pick: the
        keywords of sample_logits (temperature, top_k, top_p, generator). send(keep) instead of
        next(): keep (B,) bool, the rows that go on; the others leave the batch and the cache.
        logits_hook(tokens (B, t), logits (B, V)) -> logits runs every step after guidance (say, a
        grammar). uncond_idx (B, T), guidance != 1: classifier-free guidance, logits = uncond +
        guidance * (cond - uncond), both halves in one batch of 2B taking the same tokens.
        keep_first: tokens pinned in the context (the attribute prefix) when the sequence outgrows
        block_size; then the oldest half of the rest goes and the cache is recomputed in one pass,
        once every ~(block_size - keep_first) / 2 tokens (learned absolute positions change every
        kept token's keys and values, so it cannot shift in place). pick["pin"]: pinned_window's."""
        B, pin = idx.size(0), pick.pop("pin", None)
        assert idx.size(1) >= 1, "generation needs a prompt of at least one token"
        block = self.config.block_size
        assert 0 <= keep_first < block, f"keep_first {keep_first} must be below block_size {block}"
        guided = uncond_idx is not None and guidance != 1.0
        assert not guided or uncond_idx.shape == idx.shape, (
            f"uncond_idx {tuple(uncond_idx.shape)} is not idx's shape"
        )
        seq = torch.cat([idx, uncond_idx], dim=0) if guided else idx  # (B or 2B, T), B.. uncond
        n_recent = max(1, (block - keep_first) // 2)
        cache = KVCache(self.config.n_layer, block)

        def refill(ctx_len):  # the cache for the window, in one forward pass -> next logits (B', V)
            cache.pos = 0
            return self(pinned_window(seq, ctx_len, keep_first, pin), kv_cache=cache)[0][:, -1]

        def next_token(logits):  # each row's, its guidance twin taking it too -> (B or 2B, 1)
            logits = logits.float()
            if guided:
                cond, uncond = logits.split(B, dim=0)  # (B, V) each
                logits = uncond + guidance * (cond - uncond)  # (B, V)
            if logits_hook is not None:
                logits = logits_hook(seq[:B], logits)  # (B, V)
            finite = torch.isfinite(logits.max(dim=-1).values).all()
            assert finite, "logits_hook disallowed every token"
            next_id = sample_logits(logits, **pick)
            return next_id.repeat(2, 1) if guided else next_id  # (B or 2B, 1)

        ctx_len = min(seq.size(1), block)  # a long prompt keeps its pinned tokens and its last ones
        logits = refill(ctx_len)  # (B or 2B, V)
        while True:
            next_id = next_token(logits)
            seq = torch.cat([seq, next_id], dim=1)  # (B or 2B, t+1)
            keep = yield next_id[:B]
            if keep is not None:  # some rows are done: the batch, and the cache, go on without them
                rows = keep.to(seq.device).nonzero().squeeze(1)  # (B',)
                rows = torch.cat([rows, rows + B]) if guided else rows
                seq, next_id, B = seq[rows], next_id[rows], int(keep.sum())
                cache.select(rows)
                if isinstance(pick.get("generator"), list):
                    pick["generator"] = [g for g, k in zip(pick["generator"], keep.tolist()) if k]
            # only when the caller asks for another token: the last one never runs through the model
            ctx_len += 1
            if ctx_len > block:
                ctx_len = keep_first + n_recent
                logits = refill(ctx_len)
            else:
                logits = self(next_id, kv_cache=cache)[0][:, -1]  # (B or 2B, V)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, **sampling):
        """Extend idx (B, T) by max_new_tokens sampled tokens -> (B, T + max_new_tokens). sampling:
        the keywords of stream (temperature, top_k, top_p, logits_hook, uncond_idx, guidance,
        keep_first, generator)."""
        steps = self.stream(idx, **sampling)
        new = [next(steps) for _ in range(max_new_tokens)]  # max_new_tokens x (B, 1)
        return torch.cat([idx, *new], dim=1)


# -----------------------------------------------------------------------------
# Muon: orthogonalised momentum for the hidden matrices (Keller Jordan, 2024; modded-nanogpt's)


def orthogonalise(g, steps=5):
    """g (m, n) -> about the nearest semi-orthogonal matrix (U V^T of g's SVD), by a quintic
    Newton-Schulz iteration in bf16 whose coefficients (Muon's) push every singular value into about
    [0.7, 1.2] in 5 steps."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.bfloat16() / (g.norm() + 1e-7)
    wide = x.size(0) <= x.size(1)
    x = x if wide else x.T  # (small, large)
    for _ in range(steps):
        gram = x @ x.T  # (small, small)
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x if wide else x.T).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """One optimizer for two kinds of parameters, so that training's loop, schedule and checkpoints
    see one: groups with 'muon' step each matrix by the orthogonalised Nesterov momentum of its
    gradient (scaled so that tall and wide matrices move alike); the others are AdamW. A group's lr
    is the schedule's times its lr_scale."""

    def __init__(self, groups, lr, betas, *, momentum=0.95, eps=1e-8):
        defaults = dict(lr=lr, betas=betas, momentum=momentum, eps=eps, weight_decay=0.0)
        super().__init__(groups, defaults | dict(muon=False, lr_scale=1.0))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr = group["lr"] * group["lr_scale"]
            for p in (p for p in group["params"] if p.grad is not None):
                state, g = self.state[p], p.grad
                if group["muon"]:
                    if "momentum" not in state:
                        state["momentum"] = torch.zeros_like(p)
                    buf = state["momentum"]
                    buf.mul_(group["momentum"]).add_(g)
                    update = orthogonalise(g.add(buf, alpha=group["momentum"]))  # Nesterov
                    p.add_(update, alpha=-lr * max(1.0, p.size(0) / p.size(1)) ** 0.5)
                    continue
                if not state:
                    state.update(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["step"] += 1
                m, v = state["m"], state["v"]
                (b1, b2), t = group["betas"], state["step"]
                m.lerp_(g, 1 - b1)
                v.lerp_(g * g, 1 - b2)
                p.mul_(1 - lr * group["weight_decay"])
                p.addcdiv_(m / (1 - b1**t), (v / (1 - b2**t)).sqrt_().add_(group["eps"]), value=-lr)


# -----------------------------------------------------------------------------
# device and precision: the one place that picks them

DTYPES = ("float32", "bfloat16", "float16")  # the names pick_device and autocast take


def pick_device(device="auto", dtype="auto", local_rank=0):
    """-> (device, device_type, dtype name). auto: cuda, then mps, then cpu; bf16 where the hardware
    has it, fp16 on older GPUs (train.py pairs it with a GradScaler), fp32 otherwise."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        device = "mps" if device == "cpu" and torch.backends.mps.is_available() else device
    if device == "cuda":
        device = f"cuda:{local_rank}"
    device_type = device.split(":")[0]
    if dtype == "auto":
        if device_type == "cuda":
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        elif device_type == "cpu" and getattr(torch.cpu, "_is_avx512_bf16_supported", bool)():
            dtype = "bfloat16"  # with AVX-512 BF16, autocast steps 1.6x faster than fp32
        else:
            dtype = "float32"
    return device, device_type, dtype


def measure_peak_flops(device, dtype, n=2048, seconds=1.0):
    """The fastest an n x n matmul runs on device in dtype (a name: "bfloat16"), in FLOP/s: the best
    of `seconds` of tries, so that other jobs on the machine lower it less. MFU on a CPU is measured
    against it."""
    a = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
    (a @ a)[0, 0].item()  # warm up
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        (a @ a)[0, 0].item()  # .item() waits for the device
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def autocast(device_type, dtype):
    """The mixed-precision context for a device type and dtype name; fp32 needs none."""
    if dtype == "float32":
        return nullcontext()
    return torch.autocast(device_type, dtype=getattr(torch, dtype))


# -----------------------------------------------------------------------------
# loss on held-out windows: the tables that training's evals and checkpoints.split_loss read


def group_means(group, n_groups, **values):
    """Per-token group ids (N,) and values (N,) -> {"tokens": (G,) count, name: (G,) mean}, nan
    where empty."""
    n = torch.bincount(group, minlength=n_groups).double()  # (G,)
    out = {"tokens": n.long().cpu().numpy()}
    for name, v in values.items():
        mean = torch.bincount(group, weights=v.double(), minlength=n_groups) / n.clamp(min=1)
        out[name] = mean.masked_fill(n == 0, float("nan")).cpu().numpy()
    return out


def summed_loss_per(type_table, type_id):
    """estimate_loss's "type" table -> the summed loss of every scored token divided by the number
    of targets of one type: nats per note with the NOTE type, a number that stays comparable when a
    tokenization adds or drops tokens that carry no notes."""
    n, loss = type_table["tokens"], type_table["loss"]
    # a mean is nan where count is 0
    total = sum(float(count) * float(mean) for count, mean in zip(n, loss) if count)
    return total / max(int(n[type_id]) if type_id < len(n) else 0, 1)


@torch.no_grad()
def estimate_loss(
    model, batches, *, ctx=nullcontext(), token_type=None, variants=None, baseline_nll=None
):
    """Score windows -> tables of loss (nats) and next-token accuracy: "overall", "type" (grouped by
    token_type[target], a (V,) tensor of type ids) and "first" (by the window's first token, the
    semantic token). batches: (x, y) int64 (B, T), y -1 where nothing is scored. variants {name:
    (P,) ids}: loss_<name> is the loss of the same windows with their first P tokens replaced where
    the ids are >= 0 (say, the condition blanked: loss_<name> - loss is what that part of the
    condition gains). With baseline_nll (V,), a model that predicts each id with that fixed loss is
    scored beside (baseline_loss, baseline_acc)."""
    was_training = model.training
    model.eval()
    variants = variants or {}
    cols = {k: [] for k in ("target", "first", "loss", "acc", *(f"loss_{n}" for n in variants))}
    for x, y in batches:
        with ctx:
            logits, nll = model(x, y, reduction="none")  # (B, T, V), (B, T)
        keep = y >= 0  # (B, T)
        cols["target"].append(y[keep])
        cols["first"].append(x[:, :1].expand_as(y)[keep])
        cols["loss"].append(nll.float()[keep])
        cols["acc"].append((logits.argmax(-1) == y).float()[keep])
        for name, ids in variants.items():
            ids = torch.as_tensor(ids, device=x.device)  # (P,)
            x_variant = x.clone()
            x_variant[:, : len(ids)] = torch.where(ids >= 0, ids, x[:, : len(ids)])  # (B, T)
            with ctx:
                nll_variant = model(x_variant, y, reduction="none")[1]  # (B, T)
            cols[f"loss_{name}"].append(nll_variant.float()[keep])
    model.train(was_training)
    c = {k: torch.cat(v) for k, v in cols.items()}
    values = {k: c[k] for k in c if k.startswith("loss") or k == "acc"}
    if baseline_nll is not None:
        baseline_nll = baseline_nll.to(c["target"].device)
        values |= dict(
            baseline_loss=baseline_nll[c["target"]],
            baseline_acc=(c["target"] == baseline_nll.argmin()).float(),
        )
    V = model.config.vocab_size
    tables = dict(
        overall=group_means(torch.zeros_like(c["target"]), 1, **values),
        first=group_means(c["first"], V, **values),
    )
    if token_type is not None:
        token_type = token_type.to(c["target"].device)
        tables["type"] = group_means(token_type[c["target"]], int(token_type.max()) + 1, **values)
    return tables
