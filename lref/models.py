"""Loading base models and LoRA adapters, and the tiny local model used by tests and the quickstart.

Real users pass a local directory or a Hub id; nothing here is specific to the tiny model except
`init_tiny`, which trains a BPE tokenizer on the data and builds a small random Qwen2.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{%- else %}{{- message['content'] + '<|im_end|>' }}{%- endif %}"
    "{{- '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def load_tokenizer(name_or_path: str | Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(name_or_path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    name_or_path: str | Path,
    adapter: str | Path | None = None,
    dtype: str = "float32",
    device: str | None = None,
    merge: bool = False,
):
    """(model, tokenizer) from a directory or Hub id, with an optional LoRA adapter.

    The tokenizer comes from the adapter folder when it has one (training may add tokens).
    `merge=True` folds the adapter into the weights for faster inference.
    """
    import torch
    from transformers import AutoModelForCausalLM

    src = str(name_or_path)
    tok_src = adapter if adapter and (Path(adapter) / "tokenizer_config.json").exists() else src
    tokenizer = load_tokenizer(tok_src)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForCausalLM.from_pretrained(src, dtype=getattr(torch, dtype))
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
        if merge:
            model = model.merge_and_unload()
    model.to(device)
    model.eval()
    return model, tokenizer


def _iter_texts(data_dir: Path) -> Iterable[str]:
    from lref.data import load_products, read_table, render_product

    for p in load_products(data_dir / "products.jsonl").values():
        yield render_product(p, max_tokens=400)
    for name in ("queries.tsv", "judgments.tsv"):
        path = data_dir / name
        if path.exists():
            for _, row in read_table(path, required=["query"]):
                yield row["query"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048, must_have: Iterable[str] = ()):
    """A byte-level BPE tokenizer with ChatML special tokens and chat template.

    Strings in `must_have` (the label verbalizers) end up as single tokens: they are fed as frequent
    words to the trainer, and added as tokens if BPE still splits one.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    must_have = list(dict.fromkeys(must_have))
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )

    def corpus():
        yield from texts
        for _ in range(2000):
            yield from must_have

    bpe.train_from_iterator(corpus(), trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        model_max_length=4096,
    )
    missing = [w for w in must_have if len(tok.encode(w, add_special_tokens=False)) != 1]
    if missing:
        tok.add_tokens(missing)
    tok.chat_template = CHATML_TEMPLATE
    return tok


def init_tiny(
    out: str | Path,
    data_dir: str | Path | None = None,
    texts: Iterable[str] | None = None,
    vocab_size: int = 2048,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 1,
    seed: int = 0,
) -> Path:
    """Train a tokenizer on the data's product and query text and save a random tiny Qwen2 beside it.

    head_dim = hidden_size / num_heads is kept at 64 or more, so vLLM's CPU attention can run it too.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from lref.labels import PRESETS

    if hidden_size // num_heads < 64:
        raise ValueError(f"head_dim {hidden_size // num_heads} < 64: raise hidden_size or lower num_heads")
    if texts is None:
        if data_dir is None:
            raise ValueError("init_tiny needs data_dir or texts")
        texts = _iter_texts(Path(data_dir))
    verbalizers = [v for s in PRESETS.values() for v in s.verbalizers]
    tok = train_tokenizer(texts, vocab_size, must_have=verbalizers)
    for scheme in PRESETS.values():
        scheme.token_ids(tok)  # fails loudly if a verbalizer is not one token
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id).save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    (out / "lref_tiny.json").write_text(json.dumps({"params": n_params, "vocab_size": len(tok), "seed": seed}))
    log.info("tiny Qwen2 with %d parameters and a %d-token vocabulary saved to %s", n_params, len(tok), out)
    return out
