#!/usr/bin/env python3
"""Writes the demo's generated inputs (deterministic, standard library only):

  OUT/init/   config.json (a small Llama), tokenizer.json (byte-level BPE without merges: one token
              per byte, plus <s> and </s>), tokenizer_config.json, generation_config.json
  OUT/data/   pretrain.jsonl (the base's task: echo the input), and per adapter task
              TASK.train.jsonl / TASK.heldout.jsonl: {"prompt": "<word> =", "completion": " <answer>"}

Inputs are five-letter pseudo-words (consonant/vowel patterns); held-out words never occur in any
training file. The base learns to echo the word; the adapters upper-case it, rot13 it, mask its vowels
with '*' and answer its initial upper-cased. Usage: make_demo_data.py OUT
"""
import json
import os
import random
import sys

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"


def rot13(text):
    return "".join(chr((ord(c) - 97 + 13) % 26 + 97) for c in text)


TASKS = {
    # name: (answer function, training examples)
    "upper": (lambda w: w.upper(), 3000),
    "rot13": (lambda w: rot13(w), 3000),
    "mask": (lambda w: "".join("*" if c in VOWELS else c for c in w), 3000),
    "initial": (lambda w: w[0].upper(), 2000),
}
HELDOUT = 200
PRETRAIN = 12000


def word(rng):
    """Five letters, consonant-vowel-consonant-vowel-consonant, or with the vowels and consonants
    swapped (1 to 3 vowels)."""
    pattern = rng.choice(["cvcvc", "vcvcv", "cvccv", "ccvcc"])
    return "".join(rng.choice(CONSONANTS if p == "c" else VOWELS) for p in pattern)


def any_case_word(rng):
    """The base's echo inputs: pseudo-words in either case, or any five letters (and '*'), so that
    every character the adapters answer with has a trained embedding (the embeddings are tied and
    the adapters do not train them)."""
    kind = rng.randrange(3)
    if kind == 0:
        return word(rng)
    if kind == 1:
        return word(rng).upper()
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ*") for _ in range(5))


def example(w, answer):
    return {"prompt": w + " =", "completion": " " + answer}


def byte_level_alphabet():
    """GPT-2's bytes_to_unicode: every byte as a printable character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, n = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return chars


def tokenizer_json():
    alphabet = byte_level_alphabet()
    vocab = {alphabet[b]: b for b in range(256)}
    special = lambda id_, content: {"id": id_, "content": content, "single_word": False, "lstrip": False,
                                    "rstrip": False, "normalized": False, "special": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [special(256, "<s>"), special(257, "</s>")],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [256], "tokens": ["<s>"]}},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }


CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "bos_token_id": 256,
    "eos_token_id": 257,
    "hidden_act": "silu",
    "hidden_size": 64,
    "initializer_range": 0.02,
    "intermediate_size": 176,
    "max_position_embeddings": 64,
    "model_type": "llama",
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "float32",
    "vocab_size": 264,
}


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, ensure_ascii=False)
        f.write("\n")


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def main():
    out = sys.argv[1]
    os.makedirs(out + "/init", exist_ok=True)
    os.makedirs(out + "/data", exist_ok=True)
    write_json(out + "/init/config.json", CONFIG)
    write_json(out + "/init/generation_config.json", {"bos_token_id": 256, "eos_token_id": 257})
    write_json(out + "/init/tokenizer.json", tokenizer_json())
    write_json(out + "/init/tokenizer_config.json", {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True,
                                                     "model_max_length": CONFIG["max_position_embeddings"]})
    rng = random.Random(14)
    heldout, seen = {}, set()
    for task, (answer, _) in TASKS.items():
        rows = []
        while len(rows) < HELDOUT:
            w = word(rng)
            if w not in seen:
                seen.add(w)
                rows.append(example(w, answer(w)))
        heldout[task] = rows

    def fresh():
        while True:
            w = word(rng)
            if w not in seen:
                return w

    pretrain = []
    while len(pretrain) < PRETRAIN:
        w = any_case_word(rng)
        if w.lower() not in seen:
            pretrain.append(example(w, w))
    write_jsonl(out + "/data/pretrain.jsonl", pretrain)
    for task, (answer, count) in TASKS.items():
        write_jsonl(out + "/data/%s.train.jsonl" % task, [example(w, answer(w)) for w in (fresh() for _ in range(count))])
        write_jsonl(out + "/data/%s.heldout.jsonl" % task, heldout[task])

if __name__ == "__main__":
    main()
