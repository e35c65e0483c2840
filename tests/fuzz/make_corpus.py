#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora under tests/fuzz/corpus/<target>/: a few valid inputs taken
from tests/data and small hand-made valid and near-valid ones. Deterministic; run it again after
changing it and commit the result (scripts/fuzz.sh only reads these)."""
import json
import pathlib
import shutil
import struct

HERE = pathlib.Path(__file__).resolve().parent
DATA = HERE.parent / "data"
CORPUS = HERE / "corpus"


def safetensors(header, data=b"", pad=True):
    text = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def write(target, name, content):
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())


def tensor(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def safetensors_seeds():
    # Two real adapters (small ones) as they are on disk.
    for adapter in ("qwen-dora-r4", "lora-qv-r8"):
        write("safetensors", f"{adapter}.safetensors",
              (DATA / "adapters" / adapter / "adapter_model.safetensors").read_bytes())
    write("safetensors", "every-dtype.safetensors", safetensors(
        {"__metadata__": {"format": "pt", "note": "caf\u00e9 \\\" \u0001"},
         "f64": tensor("F64", [1], 0, 8), "f32": tensor("F32", [2], 8, 16),
         "f16": tensor("F16", [2, 1], 16, 20), "bf16": tensor("BF16", [1, 2], 20, 24),
         "i64": tensor("I64", [1], 24, 32), "i32": tensor("I32", [1], 32, 36),
         "i16": tensor("I16", [1], 36, 38), "i8": tensor("I8", [1], 38, 39),
         "u8": tensor("U8", [1], 39, 40), "bool": tensor("BOOL", [], 40, 41)},
        bytes(range(41))))
    write("safetensors", "empty-and-scalar.safetensors", safetensors(
        {"empty": tensor("F32", [0, 4096], 0, 0), "scalar": tensor("F32", [], 0, 4),
         "a.lora_A.weight": tensor("BF16", [2, 2], 4, 12)}, bytes(12)))
    write("safetensors", "no-tensors.safetensors", safetensors({}))
    write("safetensors", "escaped-names.safetensors", safetensors(
        b'{"a\\u00e9\\ud83d\\ude00\\n":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
        b'"\\/x\\t":{"shape":[1], "data_offsets" : [1,2], "dtype":"I8", "extra":[{"x":null},true]}}',
        b"\x01\x02"))
    # Near-valid: each breaks one rule.
    write("safetensors", "truncated-data.safetensors", safetensors(
        {"w": tensor("F32", [4], 0, 16)}, bytes(8)))
    write("safetensors", "overlap.safetensors", safetensors(
        {"a": tensor("U8", [4], 0, 4), "b": tensor("U8", [4], 2, 6)}, bytes(6)))
    write("safetensors", "shape-mismatch.safetensors", safetensors(
        {"a": tensor("F32", [3], 0, 16)}, bytes(16)))
    write("safetensors", "unpadded-header.safetensors", safetensors(
        {"a": tensor("U8", [1], 0, 1)}, b"\x00", pad=False))
    write("safetensors", "huge-header-length.safetensors",
          struct.pack("<Q", 1 << 40) + b'{"a":1}')
    write("safetensors", "deep.safetensors", safetensors(b"[" * 12 + b"]" * 12))


def header_seeds():
    for path in sorted((CORPUS / "safetensors").iterdir()):
        raw = path.read_bytes()
        if len(raw) < 8:
            continue
        (n,) = struct.unpack("<Q", raw[:8])
        if n <= len(raw) - 8:
            write("safetensors_header", path.stem + ".json", raw[8:8 + n])
    write("safetensors_header", "numbers.json",
          '{"t":{"dtype":"F32","shape":[0,-0,1.5,1e3,9223372036854775807,9223372036854775808,'
          '18446744073709551616],"data_offsets":[0,0]}}')
    write("safetensors_header", "duplicates.json",
          '{"t":{"dtype":"F32","dtype":"U8","shape":[],"data_offsets":[0,0]},"t":{},'
          '"__metadata__":{"k":"v","k":"w"},"__metadata__":null}')
    write("safetensors_header", "scalars.json", ' [true, false, null, "s", -1.25E-3, {}] \r\n\t')


def config_seeds():
    for adapter in sorted((DATA / "adapters").iterdir()):
        write("adapter_config", f"{adapter.name}.json", (adapter / "adapter_config.json").read_bytes())
    write("adapter_config", "regex-targets.json", json.dumps({
        "peft_type": "LORA", "r": 4, "lora_alpha": 16, "use_rslora": True,
        "target_modules": r".*\.layers\.(0|1)\.self_attn\.(q|v)_proj",
        "exclude_modules": ["model.layers.1.self_attn.v_proj"]}))
    write("adapter_config", "layers.json", json.dumps({
        "r": 8, "lora_alpha": 8, "target_modules": "all-linear", "layers_to_transform": [0, 7],
        "layers_pattern": ["layers"], "rank_pattern": {"model.layers.7.mlp.up_proj": 2,
                                                        "q_proj": 4},
        "alpha_pattern": {r"layers\.0\..*": 1.5}}))
    # Probe paths after a NUL (see adapter_config_fuzzer.cc).
    write("adapter_config", "with-paths.bin",
          json.dumps({"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "mlp.down_proj"],
                      "layers_to_transform": 3}) +
          "\0model.layers.3.mlp.down_proj\nmodel.layers.3.self_attn.q_proj\nx.q_proj\nq_proj")
    write("adapter_config", "unsupported.json", json.dumps({
        "r": 8, "lora_alpha": 8, "target_modules": ["q_proj"], "modules_to_save": ["lm_head"]}))

    write("seed_config", "alpha.json", '{"alpha": 2.0}')
    write("seed_config", "alpha-int.json", '{"alpha": 16, "rank": 4}')
    write("seed_config", "alpha-duplicate.json", '{"alpha": 1, "alpha": -0.5e-3}')
    write("seed_config", "alpha-string.json", '{"alpha": "2"}')

    for model in ("llama-tiny", "qwen2-tiny"):
        write("model_config", f"{model}.json", (DATA / model / "config.json").read_bytes())
    base = json.loads((DATA / "llama-tiny" / "config.json").read_text())
    write("model_config", "mistral-sliding.json", json.dumps(dict(
        base, architectures=["MistralForCausalLM"], sliding_window=4096, head_dim=16,
        num_key_value_heads=2, eos_token_id=[2, 32000])))
    write("model_config", "llama3-rope.json", json.dumps(dict(
        base, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        attention_bias=True, mlp_bias=True, tie_word_embeddings=True, bos_token_id=1)))
    write("model_config", "linear-rope.json", json.dumps(dict(
        base, rope_scaling={"type": "linear", "factor": 2}, rope_theta=500000.0,
        rms_norm_eps=1e-5)))
    write("model_config", "qwen2-window.json", json.dumps(dict(
        base, architectures=["Qwen2ForCausalLM"], use_sliding_window=True, sliding_window=128)))


def text_seeds():
    # tokenize: selector byte (0 llama3, 1 qwen3, 2 llama2), then text from the golden cases.
    for selector, family in enumerate(("llama3", "qwen3", "llama2")):
        lines = [l for l in (DATA / "tokenizers" / family / "cases.jsonl").read_text().split("\n") if l]
        for i, line in enumerate(lines[:: max(1, len(lines) // 6)][:6]):
            text = json.loads(line)["text"].encode()[:512]
            write("tokenize", f"{family}-{i}.bin", bytes([selector]) + text)
    write("tokenize", "special-tokens.bin",
          b"\x00<|begin_of_text|>hi<|eot_id|> \xf0\x9f\x98\x80\r\n\t  x")
    write("tokenize", "invalid-utf8.bin", b"\x01ab\xc3\x28\xed\xa0\x80")
    write("tokenize", "byte-fallback.bin", "\x02\u2581\u00a0\U0001F600 \u0301e\u0301".encode())

    # chat_template: the real templates and a sample of the Jinja snippets.
    for folder in sorted((DATA / "chat_templates").iterdir()):
        config = folder / "tokenizer_config.json"
        if not config.exists():
            continue
        source = json.loads(config.read_text())["chat_template"]
        if isinstance(source, list):
            source = next(t["template"] for t in source if t["name"] == "default")
        write("chat_template", f"{folder.name}.jinja", source)
    snippets = json.loads((DATA / "chat_templates" / "snippets.json").read_text())
    for i, snippet in enumerate(snippets[::8]):
        write("chat_template", f"snippet-{i:02d}.jinja", snippet["template"])

    # chat_render: selector byte (template index, then add_generation_prompt), messages, NUL, kwargs.
    names = ["qwen3", "llama3_1", "llama3_1_tools", "llama2", "gemma3", "deepseek_v3"]
    for t, name in enumerate(names):
        cases = json.loads((DATA / "chat_templates" / name / "cases.json").read_text())
        for i, case in enumerate(cases[:: max(1, len(cases) // 3)][:3]):
            selector = t + len(names) * int(bool(case["add_generation_prompt"]))
            body = json.dumps(case["messages"], ensure_ascii=False).encode()
            if case.get("kwargs"):
                body += b"\0" + json.dumps(case["kwargs"], ensure_ascii=False).encode()
            write("chat_render", f"{name}-{i}.bin", bytes([selector]) + body)

    # upload_stream: FuzzedDataProvider bytes as well.
    write("upload_stream", "zeros.bin", bytes(128))
    write("upload_stream", "ramp.bin", bytes(range(256)) * 4)

    # request: FuzzedDataProvider bytes; a few fixed patterns to start from.
    write("request", "zeros.bin", bytes(64))
    write("request", "ones.bin", b"\x01" * 96)
    write("request", "mixed.bin", bytes(range(256)))


def finding_seeds():
    """Inputs of past findings, replayed first on every run (tests/fuzz/README.md)."""
    # Found by adapter_config_fuzzer on main at 0fea873 (issue 12): an uncaught nlohmann
    # type_error (any mistyped string field: bias, peft_type), rank_pattern truncating 0.5 to
    # rank 0, and a float-to-int64 conversion of 1e300 that is undefined behaviour.
    lora = {"r": 8, "lora_alpha": 8, "target_modules": ["q_proj"]}
    write("adapter_config", "finding-bias-object.json", json.dumps(dict(lora, bias={})))
    write("adapter_config", "finding-peft-type-number.json", json.dumps(dict(lora, peft_type=5)))
    write("adapter_config", "finding-use-dora-string.json", json.dumps(dict(lora, use_dora="yes")))
    write("adapter_config", "finding-rank-pattern-half.json",
          json.dumps(dict(lora, rank_pattern={"q_proj": 0.5})))
    write("adapter_config", "finding-rank-pattern-1e300.json",
          json.dumps(dict(lora, rank_pattern={"q_proj": 1e300})))
    # Found by model_config_fuzzer: hidden_act of another type (or null) threw nlohmann type_error.
    base = json.loads((DATA / "llama-tiny" / "config.json").read_text())
    write("model_config", "finding-hidden-act-number.json", json.dumps(dict(base, hidden_act=320)))
    write("model_config", "finding-hidden-act-null.json", json.dumps(dict(base, hidden_act=None)))
    write("model_config", "finding-rope-type-object.json",
          json.dumps(dict(base, rope_scaling={"type": {}, "factor": 2})))
    # Where the header reader and nlohmann differ on purpose (safetensors_header_fuzzer.cc).
    write("safetensors_header", "finding-number-overflow.json", "1e309028")
    write("safetensors_header", "finding-bom.json", b"\xef\xbb\xbf{}")
    write("safetensors_header", "finding-nul-after-value.json", b"{}\x00\x00")


def main():
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    safetensors_seeds()
    header_seeds()
    config_seeds()
    text_seeds()
    finding_seeds()


if __name__ == "__main__":
    main()
