"""Prompt text: tokenizer, grammar parser and validation, token ids for the text encoder."""

from t2v_rt.text.grammar import VOCAB, Prompt, encode_tokens, parse_prompt, tokenize

__all__ = ["VOCAB", "Prompt", "encode_tokens", "parse_prompt", "tokenize"]
