"""Tiny random Stable Diffusion components saved in the real folder formats, for tests.

Everything is built offline with diffusers/transformers (PyTorch) and saved with ``save_pretrained`` (or,
for the tokenizer, a hand-written byte-level BPE vocabulary), so the converters read exactly what they
read from a hub download. Weights are the libraries' default init plus seeded noise
(:func:`randomize_weights`), so no norm is an identity and no bias is zero.

Usage::

    from fixtures_sd import save_tiny_text_encoder, save_tiny_tokenizer, save_tiny_vae  # pytest pythonpath
    vae_config = save_tiny_vae(tmp_path / "vae")                  # diffusers vae/ folder
    te_config = save_tiny_text_encoder(tmp_path / "text_encoder")   # transformers text_encoder/ folder
    save_tiny_tokenizer(tmp_path / "tokenizer")                     # CLIP tokenizer/ folder (77 tokens)

The tiny text encoder's vocabulary and special token ids match the tiny tokenizer's, so tokenized text
can be fed to it directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MAX_LENGTH = 77
# BPE merges (in priority order) for a few words of edit instructions; everything else falls back to
# single characters, which are always in the vocabulary.
TINY_MERGES = (
    ("t", "h"),
    ("th", "e</w>"),
    ("c", "a"),
    ("ca", "t</w>"),
    ("d", "o"),
    ("do", "g</w>"),
    ("a", "n"),
    ("an", "d</w>"),
    ("m", "a"),
    ("ma", "k"),
    ("mak", "e</w>"),
    ("i", "t</w>"),
    ("r", "e"),
    ("re", "d</w>"),
    ("n", "o"),
    ("no", "n"),
    ("non", "e</w>"),
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from the 256 byte values to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def tiny_vocab() -> dict[str, int]:
    """CLIP's vocabulary layout at small scale: bytes, bytes + ``</w>``, merges, then the two specials."""
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(pair) for pair in TINY_MERGES]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: i for i, token in enumerate(tokens)}


TINY_VOCAB_SIZE = len(tiny_vocab())
TINY_BOS_ID = TINY_VOCAB_SIZE - 2
TINY_EOS_ID = TINY_VOCAB_SIZE - 1


def save_tiny_tokenizer(dst: str | Path) -> dict[str, int]:
    """Write a CLIP ``tokenizer/`` folder (vocab.json, merges.txt, configs; 77 tokens).

    Returns ``{"vocab_size", "bos_token_id", "eos_token_id", "pad_token_id"}`` (pad is end-of-text, as in
    Stable Diffusion).
    """
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "vocab.json").write_text(json.dumps(tiny_vocab(), ensure_ascii=False), encoding="utf-8")
    merges = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in TINY_MERGES)
    (dst / "merges.txt").write_text(merges, encoding="utf-8")
    specials = {
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
    }
    tokenizer_config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": MAX_LENGTH, **specials}
    (dst / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2), encoding="utf-8")
    (dst / "special_tokens_map.json").write_text(json.dumps(specials, indent=2), encoding="utf-8")
    return {
        "vocab_size": TINY_VOCAB_SIZE,
        "bos_token_id": TINY_BOS_ID,
        "eos_token_id": TINY_EOS_ID,
        "pad_token_id": TINY_EOS_ID,
    }


def randomize_weights(module, seed: int = 0, scale: float = 0.5) -> None:
    """Add seeded Gaussian noise to every parameter of a PyTorch module, in place.

    Matrices and kernels get ``scale * std(param)`` noise; vectors (norm scales, biases) get ``0.2 *
    scale`` noise, so norms are not identities and biases not zero.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(module.named_parameters()):
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32).to(param.dtype)
            if param.ndim >= 2 and param.numel() > 1:
                param.add_(noise * scale * float(param.float().std()))
            else:
                param.add_(noise * 0.2 * scale)


def tiny_vae_config(**overrides: Any) -> dict[str, Any]:
    """A diffusers ``AutoencoderKL`` config: 2 blocks (16, 32 channels), 8 groups, 4 latent channels.

    Block types follow ``block_out_channels`` unless given.
    """
    config: dict[str, Any] = {
        "block_out_channels": [16, 32],
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 8,
        "sample_size": 32,
    }
    config.update(overrides)
    n = len(config["block_out_channels"])
    config.setdefault("down_block_types", ["DownEncoderBlock2D"] * n)
    config.setdefault("up_block_types", ["UpDecoderBlock2D"] * n)
    return config


def save_tiny_vae(dst: str | Path, *, seed: int = 0, **overrides: Any) -> dict[str, Any]:
    """Save a random tiny diffusers ``AutoencoderKL`` to ``dst``; returns its saved config.json."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    model = AutoencoderKL(**tiny_vae_config(**overrides))
    randomize_weights(model, seed)
    model.save_pretrained(str(dst))
    return json.loads((Path(dst) / "config.json").read_text())


def tiny_text_encoder_config(hidden_act: str = "quick_gelu", **overrides: Any) -> dict[str, Any]:
    """A transformers ``CLIPTextConfig`` dict: 2 layers of width 32, 4 heads, 77 positions, tiny vocab."""
    config: dict[str, Any] = {
        "vocab_size": TINY_VOCAB_SIZE,
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": MAX_LENGTH,
        "hidden_act": hidden_act,
        "projection_dim": 16,
        "bos_token_id": TINY_BOS_ID,
        "eos_token_id": TINY_EOS_ID,
        "pad_token_id": TINY_EOS_ID,
    }
    config.update(overrides)
    return config


def build_tiny_text_encoder(hidden_act: str = "quick_gelu", *, seed: int = 0, **overrides: Any):
    """A random tiny transformers ``CLIPTextModel`` (in eval mode)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    model = CLIPTextModel(CLIPTextConfig(**tiny_text_encoder_config(hidden_act, **overrides)))
    randomize_weights(model, seed)
    return model.eval()


def save_tiny_text_encoder(
    dst: str | Path, hidden_act: str = "quick_gelu", *, seed: int = 0, **overrides: Any
) -> dict[str, Any]:
    """Save a random tiny transformers ``CLIPTextModel`` to ``dst``; returns its saved config.json."""
    build_tiny_text_encoder(hidden_act, seed=seed, **overrides).save_pretrained(str(dst))
    return json.loads((Path(dst) / "config.json").read_text())


def save_tiny_sd_components(root: str | Path, *, seed: int = 0) -> dict[str, Any]:
    """Write ``root/vae``, ``root/text_encoder`` and ``root/tokenizer``; returns their configs by name."""
    root = Path(root)
    return {
        "vae": save_tiny_vae(root / "vae", seed=seed),
        "text_encoder": save_tiny_text_encoder(root / "text_encoder", seed=seed),
        "tokenizer": save_tiny_tokenizer(root / "tokenizer"),
    }


def run_module(module: str, *args: str, cwd: str | Path, env: dict | None = None, timeout: float = 300):
    """``python -m module args...`` in a new process on the CPU with the checkout importable (``env``
    entries added): its CompletedProcess, text output captured."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    full_env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(repo), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )
