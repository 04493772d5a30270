"""The transformers backend: batched one-pass scoring and generation on a local model.

Prompts are sorted by length and left-padded, with position ids taken from the attention mask, so a
padded row sees exactly the positions it would see alone; only the last position's logits are
computed (`logits_to_keep=1`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from lref.engines.base import Engine, Prompt, ScoredPair, distribution
from lref.labels import LabelScheme, get_scheme
from lref.prompts import render_chat

log = logging.getLogger(__name__)


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int):
    """(input_ids, attention_mask, position_ids) of left-padded sequences; positions follow the mask."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, width - len(s) :] = torch.tensor(list(s), dtype=torch.long)
        mask[r, width - len(s) :] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def last_token_logits(model, seqs: Sequence[Sequence[int]], pad_id: int):
    """(len(seqs), vocab) float32 next-token logits from one left-padded forward pass (`logits_to_keep=1`).

    The one batched forward pass of lref: the HF engine's scoring and the embedded server both use it.
    """
    dev = next(model.parameters()).device
    ids, mask, pos = left_pad(seqs, pad_id)
    out = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev), logits_to_keep=1)
    return out.logits[:, -1, :].float()


class HFEngine(Engine):
    def __init__(
        self, model, tokenizer, scheme: LabelScheme | str = "esci", batch_size: int = 16, max_length: int = 2048
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.scheme = get_scheme(scheme)
        self.batch_size = batch_size
        self.max_length = max_length
        self.verbalizer_ids = self.scheme.token_ids(tokenizer)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    @classmethod
    def from_pretrained(cls, name_or_path, adapter=None, scheme: LabelScheme | str = "esci", **kwargs) -> HFEngine:
        from lref.models import load_model

        model, tok = load_model(name_or_path, adapter=adapter, dtype=kwargs.pop("dtype", "float32"))
        return cls(model, tok, scheme, **kwargs)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def render(self, prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return prompt
        return render_chat(self.tokenizer, prompt)

    def encode(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        out = []
        for p in prompts:
            ids = self.tokenizer(self.render(p), add_special_tokens=False)["input_ids"]
            if len(ids) > self.max_length:
                log.warning("prompt of %d tokens cut to the last %d", len(ids), self.max_length)
                ids = ids[-self.max_length :]
            out.append(ids)
        return out

    def _batches(self, encoded: list[list[int]]):
        """Yield (indices, sequences), longest prompts first, `batch_size` at a time."""
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            yield idx, [encoded[i] for i in idx]

    def verbalizer_logits(self, prompts: Sequence[Prompt], progress: bool = False):
        """float32 array (n, n_grades): next-token logits of each verbalizer at the answer position."""
        import numpy as np
        import torch
        from tqdm.auto import tqdm

        encoded = self.encode(prompts)
        out = np.zeros((len(encoded), len(self.verbalizer_ids)), dtype=np.float64)
        vid = torch.tensor(self.verbalizer_ids, device=self.device)
        bar = tqdm(total=len(encoded), desc="scoring", unit="pair", disable=not progress)
        with torch.inference_mode():
            for idx, seqs in self._batches(encoded):
                logits = last_token_logits(self.model, seqs, self.tokenizer.pad_token_id)
                out[idx] = logits.index_select(-1, vid).double().cpu().numpy()
                bar.update(len(idx))
        bar.close()
        return out

    def score(self, prompts: Sequence[Prompt], progress: bool = False) -> list[ScoredPair]:
        return [distribution(row, self.scheme) for row in self.verbalizer_logits(prompts, progress)]

    def generate(
        self, prompts: Sequence[Prompt], max_new_tokens: int = 128, temperature: float = 0.0, progress: bool = False
    ) -> list[str]:
        import torch
        from tqdm.auto import tqdm

        encoded = self.encode(prompts)
        out: list[str] = [""] * len(encoded)
        kwargs = {"do_sample": temperature > 0, "max_new_tokens": max_new_tokens}
        if temperature > 0:
            kwargs["temperature"] = temperature
        bar = tqdm(total=len(encoded), desc="generating", unit="prompt", disable=not progress)
        with torch.inference_mode():
            for idx, seqs in self._batches(encoded):
                ids, mask, _ = left_pad(seqs, self.tokenizer.pad_token_id)
                ids, mask = ids.to(self.device), mask.to(self.device)
                gen = self.model.generate(
                    input_ids=ids, attention_mask=mask, pad_token_id=self.tokenizer.pad_token_id, **kwargs
                )
                for r, i in enumerate(idx):
                    out[i] = self.tokenizer.decode(gen[r, ids.shape[1] :], skip_special_tokens=True)
                bar.update(len(idx))
        bar.close()
        return out
