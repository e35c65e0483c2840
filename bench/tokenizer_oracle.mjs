// The oracle half of bench/tokenizer_bench: times HuggingFace tokenizers (the Rust core, through
// the @anush008/tokenizers Node binding) on the same corpus. tokenizer_bench runs it:
//   node bench/tokenizer_oracle.mjs NODE_MODULES TOKENIZER_JSON CORPUS_JSON
// CORPUS_JSON is a JSON array of strings. Prints one JSON line:
//   {"load_ms", "strings_mb_s", "document_mb_s", "batch_mb_s"}
// Times are CPU time of the whole process (all threads: the binding encodes on libuv's pool), so
// a busy machine slows the numbers less than wall time would. Run it with
// TOKENIZERS_PARALLELISM=false, or rayon's idle worker threads spin and count as CPU time.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const [nodeModules, tokenizerPath, corpusPath] = process.argv.slice(2);
const require = createRequire(path.join(path.resolve(nodeModules), 'noop.js'));
const { Tokenizer } = require('@anush008/tokenizers');

const corpus = JSON.parse(fs.readFileSync(corpusPath, 'utf8'));
const bytes = corpus.reduce((n, s) => n + Buffer.byteLength(s, 'utf8'), 0);
const document = corpus.join('\n');

function cpuSeconds() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

let t = cpuSeconds();
const tok = Tokenizer.fromFile(tokenizerPath);
const loadMs = (cpuSeconds() - t) * 1e3;

async function rate(body) {
  await body();  // warm-up (fills the BPE cache, as the C++ side's warm-up does)
  let rounds = 0;
  t = cpuSeconds();
  let seconds = 0;
  do {
    await body();
    ++rounds;
    seconds = cpuSeconds() - t;
  } while (seconds < 1.0);
  return (bytes * rounds) / seconds / 1e6;
}

const strings = await rate(async () => {
  for (const s of corpus) await tok.encode(s, null, { addSpecialTokens: false });
});
const doc = await rate(async () => {
  await tok.encode(document, null, { addSpecialTokens: false });
});
const batch = await rate(async () => {
  await tok.encodeBatch(corpus, { addSpecialTokens: false });
});
console.log(JSON.stringify({ load_ms: loadMs, strings_mb_s: strings, document_mb_s: doc, batch_mb_s: batch }));
