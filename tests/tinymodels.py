"""Tiny Hugging Face models built from configs, for tests that must never download anything.

Each factory writes a complete model folder (config, random weights, a tokenizer trained on the fly
by the `tokenizers` library) that loads with plain `from_pretrained(path)`. Tests on these weights
check files, reloading, masking and resumption, never accuracy.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "where is my order it was supposed to arrive yesterday",
    "I want a refund for the broken headphones",
    "how do I reset my password",
    "Ulfric Stormcloak leads the rebellion from Windhelm",
    "Lydia is a housecarl in Whiterun",
    "extract the entities from this sentence",
    "answer: yes no maybe positive negative neutral",
    "0 1 2 3 4 5 6 7 8 9 , . ! ? : ; ' \" ( ) [ ] { }",
] * 4

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def train_tokenizer(vocab_size: int = 512, *, chat_template: bool = False, wordpiece: bool = False):
    """A fast tokenizer trained on `CORPUS` in milliseconds (byte-level BPE or WordPiece)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if wordpiece:
        special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special)
        tok.train_from_iterator(CORPUS, trainer)
        from tokenizers import processors

        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        tok.decoder = decoders.WordPiece()
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
            sep_token="[SEP]", mask_token="[MASK]",
        )

    special = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|end|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
    )
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def make_tiny_llama(path: str | Path, *, chat_template: bool = False, max_positions: int = 512,
                    hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """A 2-layer Llama (hidden 64, GQA 4/2 heads) with a trained BPE tokenizer, saved at `path`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tokenizer = train_tokenizer(chat_template=chat_template)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=max_positions, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_tiny_bert(path: str | Path, *, max_positions: int = 128, hidden: int = 64, layers: int = 2,
                   seed: int = 0) -> Path:
    """A 2-layer BERT encoder (what all-MiniLM-L6-v2 is) with a trained WordPiece tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    path = Path(path)
    tokenizer = train_tokenizer(wordpiece=True)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=layers, num_attention_heads=2, max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
