"""Loading a frozen causal language model: a hub id, a local folder, or a GGUF file (converted once)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from core import paths
from core.errors import LanguageModelError

DEFAULT_LM = paths.DEFAULT_LM


@dataclass
class LanguageModel:
    model: "torch.nn.Module"  # a transformers CausalLM, frozen, in eval mode
    tokenizer: object
    name: str
    identity: str  # architecture + weights fingerprint; translators record it

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().weight.shape[1]

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def eos_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def stop_token_ids(self) -> list[int]:
        """Tokens that end a sentence: EOS and the tokenizer's other special tokens. A chat model's turn
        markers (SmolLM2: <|im_start|>, <|endoftext|>) never belong to a caption; a translator that
        misses EOS by one of them would otherwise run on into "assistant"."""
        return sorted({self.eos_token_id, *getattr(self.tokenizer, "all_special_ids", ())})

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)  # (B, T) -> (B, T, d)


def _fingerprint(folder: Path) -> str:
    """Cheap, content-based: config plus the head, tail and size of every weight file."""
    h = hashlib.sha256()
    cfg = folder / "config.json"
    if cfg.exists():
        h.update(cfg.read_bytes())
    for w in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        size = w.stat().st_size
        h.update(str(size).encode())
        with open(w, "rb") as f:
            h.update(f.read(1 << 20))
            f.seek(max(0, size - (1 << 20)))
            h.update(f.read(1 << 20))
    return h.hexdigest()[:12]


def convert_gguf(gguf_file: str | Path, out_dir: str | Path) -> Path:
    """De-quantize a GGUF model with transformers and save it as a safetensors folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file, out_dir = Path(gguf_file), Path(out_dir)
    tok = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    # transformers refuses to save a model loaded from GGUF; a fresh model of the same config can be saved.
    config = loaded.config
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / "texplain_source.json").write_text(json.dumps({"gguf": gguf_file.name}))
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    tmp.replace(out_dir)
    return out_dir


def resolve_lm_path(name_or_path: str | Path) -> tuple[str, str | Path]:
    """Map a user's LM reference to (display name, something from_pretrained loads)."""
    s = str(name_or_path)
    if s in (DEFAULT_LM, "smollm2", "default"):
        if not (paths.LM_DIR / "config.json").exists():
            raise FileNotFoundError(f"the default LM is not prepared at {paths.LM_DIR}; run `make setup`")
        return DEFAULT_LM, paths.LM_DIR
    p = Path(s)
    if p.suffix == ".gguf":
        if not p.exists():
            raise FileNotFoundError(f"GGUF file {p} does not exist")
        cache = paths.ASSETS / "models" / f"gguf-{p.stem}-{_fingerprint_file(p)}"
        if not (cache / "config.json").exists():
            convert_gguf(p, cache)
        return p.stem, cache
    if not p.exists() and (p.is_absolute() or s.startswith((".", "~"))):  # a path, not a hub id
        raise LanguageModelError(f"language model folder {p} does not exist")
    if p.exists():
        if not (p / "config.json").exists():
            raise FileNotFoundError(f"{p} is not a Hugging Face model folder (no config.json)")
        return p.name, p
    return s, s  # a hub id; offline mode makes this fail clearly unless it is cached


def _fingerprint_file(p: Path) -> str:
    st = p.stat()
    return hashlib.sha256(f"{p.name}:{st.st_size}".encode()).hexdigest()[:8]


def load_language_model(name_or_path: str | Path = DEFAULT_LM, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> LanguageModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name, src = resolve_lm_path(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(src)
        model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype)
    except Exception as exc:  # a refused pickle (weights_only), damaged weights, an unknown hub id offline
        import pickle

        if isinstance(exc, pickle.UnpicklingError) or isinstance(exc.__cause__, pickle.UnpicklingError):
            reason = ("its pickled weights were refused: unpickling them could run code. Use safetensors weights "
                      "(save_pretrained(..., safe_serialization=True) from a copy you trust)")
        else:
            first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
            reason = f"{type(exc).__name__}: {first}"
        where = "the folder" if Path(str(src)).exists() else "the hub id (offline: only cached models load)"
        raise LanguageModelError(f"language model {str(name_or_path)!r} could not be loaded from {where} {src}: "
                                 f"{reason}") from exc
    model.to(device).eval().requires_grad_(False)
    if tok.eos_token_id is None:
        raise LanguageModelError(f"language model {name!r} has no end-of-sequence token; sentences could not stop")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    # Captions are right-padded in training; generation builds its own masks.
    tok.padding_side = "right"
    arch = model.config.model_type
    fp = _fingerprint(Path(src)) if Path(src).exists() else hashlib.sha256(str(src).encode()).hexdigest()[:12]
    return LanguageModel(model=model, tokenizer=tok, name=name, identity=f"{arch}:{name}:{fp}")
