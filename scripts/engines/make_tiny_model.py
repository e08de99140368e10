"""Build a tiny random-weight Llama and a BPE tokenizer into a folder that vLLM can load.

vLLM's CPU attention needs head_dim >= 32 and blocks that are a multiple of 32 tokens.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

PARAMS: dict[str, Any] = {
    "format": 2,
    "seed": 1234,
    "vocab_size": 4096,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "max_position_embeddings": 4096,
    "corpus_lines": 6000,
}
STAMP = "tiny-model-params.json"
SPECIAL = ["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
_ONSETS = ("b", "c", "d", "f", "g", "h", "l", "m", "n", "p", "r", "s", "t", "w", "st", "th", "pr")
_VOWELS = ("a", "e", "i", "o", "u", "ea", "ou", "ai")
_CODAS = ("", "", "n", "r", "s", "t", "nd", "ng", "ll", "st")
_COMMON = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "it",
    "was",
    "for",
    "on",
    "are",
    "with",
    "as",
    "his",
    "they",
    "be",
    "at",
    "one",
    "have",
    "this",
    "from",
    "or",
    "had",
    "by",
    "word",
    "but",
    "what",
    "some",
    "we",
    "can",
    "out",
    "other",
    "were",
    "all",
    "there",
    "when",
    "up",
    "use",
    "your",
    "how",
    "said",
    "an",
    "each",
    "she",
    "which",
    "do",
    "their",
    "time",
    "if",
    "will",
    "way",
    "about",
    "many",
    "then",
    "them",
    "write",
    "would",
    "like",
    "so",
]


def _word(rng: random.Random) -> str:
    return "".join(
        rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
        for _ in range(rng.randint(1, 3))
    )


def corpus(seed: int, lines: int) -> list[str]:
    """English-like pseudo sentences, a pure function of the seed."""
    rng = random.Random(f"tiny-corpus:{seed}")
    lexicon = sorted({_word(rng) for _ in range(5000)})
    out: list[str] = []
    for _ in range(lines):
        words = [
            rng.choice(_COMMON) if rng.random() < 0.4 else rng.choice(lexicon)
            for _ in range(rng.randint(6, 24))
        ]
        out.append(" ".join(words).capitalize() + rng.choice(".?!,;"))
    return out


def build_tokenizer(folder: Path, params: dict[str, Any]) -> None:
    """Train a byte-level BPE tokenizer and save it with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=params["vocab_size"],
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(params["seed"], params["corpus_lines"]), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="</s>",
        additional_special_tokens=SPECIAL[3:],
        model_max_length=params["max_position_embeddings"],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(folder))


def build_model(folder: Path, params: dict[str, Any]) -> None:
    """Random-weight Llama of the configured shape, saved as safetensors."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(params["seed"])
    config = LlamaConfig(
        vocab_size=params["vocab_size"],
        hidden_size=params["hidden_size"],
        intermediate_size=params["intermediate_size"],
        num_hidden_layers=params["num_hidden_layers"],
        num_attention_heads=params["num_attention_heads"],
        num_key_value_heads=params["num_key_value_heads"],
        head_dim=params["head_dim"],
        max_position_embeddings=params["max_position_embeddings"],
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(str(folder))


def main(argv: list[str] | None = None) -> int:
    """Build into the folder unless it already holds a build of the same parameters."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    folder: Path = args.folder
    stamp = folder / STAMP
    if stamp.is_file() and json.loads(stamp.read_text()) == PARAMS:
        print(f"tiny model already built in {folder}")
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    build_tokenizer(folder, PARAMS)
    build_model(folder, PARAMS)
    stamp.write_text(json.dumps(PARAMS, indent=1, sort_keys=True) + "\n")
    print(f"tiny model built in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
