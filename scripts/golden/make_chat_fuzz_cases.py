#!/usr/bin/env python3
"""Differential check of loramux's chat templates against Jinja2 on random conversations (not a
test: nothing is committed from it). Writes <out>/<family>/{tokenizer_config.json,cases.json}
with 400 seeded random conversations per golden template (random roles, tool calls with string or
object arguments, null content, reasoning_content, tools/enable_thinking/date_string kwargs),
rendered by Jinja2 as transformers configures it; then chat_template_bench compares:
  python3 scripts/golden/make_chat_fuzz_cases.py /tmp/chatfuzz
  ./build/bench/chat_template_bench /tmp/chatfuzz      # the "differ" column must be 0
"""
import json, random, sys, pathlib, shutil
sys.path.insert(0, str(pathlib.Path(__file__).parent))
from check_chat_golden_jinja2 import render, special_tokens, template_source
src = pathlib.Path(__file__).resolve().parent.parent.parent / 'tests/data/chat_templates'
rng = random.Random(7)
TEXTS = ["hi", "", " ", "  spaced  ", "\n\nnl\n\n", "<think>\nr\n</think>\n\nans", "a</think>b", "<tool_response>\nx\n</tool_response>",
         "한국어", "emoji 😀", "tab\tq'\"\\", "multi\nline\n", "{\"json\": 1}", "x" * 50]
TOOLS = [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}}]
def msg():
    role = rng.choice(["user", "user", "assistant", "assistant", "system", "tool"])
    m = {"role": role, "content": rng.choice(TEXTS)}
    if role == "assistant" and rng.random() < 0.3:
        args = {"a": rng.randint(0, 9), "s": rng.choice(TEXTS)}
        m["tool_calls"] = [{"type": "function", "function": {"name": rng.choice(["f", "g"]), "arguments": json.dumps(args) if rng.random() < 0.5 else args}} for _ in range(rng.randint(1, 2))]
        if rng.random() < 0.3: m["content"] = None
    if role == "assistant" and rng.random() < 0.2: m["reasoning_content"] = rng.choice(TEXTS)
    return m
for fam in ["qwen3", "llama3_1", "llama3_1_tools", "llama2", "gemma3", "deepseek_v3"]:
    out = pathlib.Path(sys.argv[1]) / fam
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / fam / 'tokenizer_config.json', out / 'tokenizer_config.json')
    config = json.loads((out / 'tokenizer_config.json').read_text())
    source = template_source(config)
    cases = []
    for i in range(400):
        msgs = [msg() for _ in range(rng.randint(1, 7))]
        if rng.random() < 0.5: msgs[0] = {"role": "user", "content": rng.choice(TEXTS)}
        kwargs = {}
        if rng.random() < 0.3: kwargs["tools"] = TOOLS
        if rng.random() < 0.3: kwargs["enable_thinking"] = rng.random() < 0.5
        if rng.random() < 0.3: kwargs["date_string"] = "1 Jan 2000"
        agp = rng.random() < 0.5
        r = render(source, {**special_tokens(config), "messages": msgs, "add_generation_prompt": agp, **kwargs})
        cases.append({"name": f"r{i}", "messages": msgs, "add_generation_prompt": agp, "kwargs": kwargs, **r})
    (out / 'cases.json').write_text(json.dumps(cases, ensure_ascii=False))
    print(fam, sum('expected' in c for c in cases), 'ok', sum('expected_error' in c for c in cases), 'raise', sum('failure' in c for c in cases), 'fail')
