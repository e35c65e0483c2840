// The official OpenAI SDK for Node as a real client of loramux's HTTP front. Run by
// tests/integration/openai_http_test.cc:
//
//   node sdk_check.mjs SCENARIO BASE_URL API_KEY 'ARGS_JSON'
//
// prints one JSON object (the scenario's observations) on stdout; the C++ test compares them with
// the same requests made over gRPC. Every request has a timeout; the SDK's own retries are off
// unless a scenario says otherwise, so every status the server sends is seen as sent.
import OpenAI from 'openai';

const [scenario, baseURL, apiKey, argsJson] = process.argv.slice(2);
const args = JSON.parse(argsJson || '{}');
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60_000 });

// One completion or chat request, streamed or not; returns what a user of the SDK sees.
async function run(req) {
  const { endpoint, ...body } = req;
  const api = endpoint === 'chat' ? client.chat.completions : client.completions;
  if (!body.stream) {
    const r = await api.create(body);
    const choice = r.choices[0];
    return {
      id: r.id, object: r.object, model: r.model, fingerprint: r.system_fingerprint ?? null,
      text: endpoint === 'chat' ? choice.message.content : choice.text,
      role: endpoint === 'chat' ? choice.message.role : null,
      finish_reason: choice.finish_reason, usage: r.usage, token_ids: choice.token_ids ?? null,
      logprobs: choice.logprobs ?? null,
    };
  }
  const stream = await api.create(body);
  let text = '', finish_reason = null, usage = null, chunks = 0, role = null, object = null, fingerprint = null;
  const token_ids = [];
  for await (const chunk of stream) {
    ++chunks;
    object = chunk.object;
    fingerprint = chunk.system_fingerprint ?? fingerprint;
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      if (endpoint === 'chat') {
        if (choice.delta.role) role = choice.delta.role;
        text += choice.delta.content ?? '';
      } else {
        text += choice.text;
      }
      if (choice.token_ids) token_ids.push(...choice.token_ids);
      if (choice.finish_reason) finish_reason = choice.finish_reason;
    }
  }
  return { object, text, role, finish_reason, usage, chunks, fingerprint,
           token_ids: body.return_token_ids ? token_ids : null };
}

// The SDK's view of a refused request.
function describeError(e) {
  if (!(e instanceof OpenAI.APIError)) return { thrown: String(e) };
  return {
    status: e.status ?? null, class: e.constructor.name, message: e.message,
    type: e.type ?? null, param: e.param ?? null, code: e.code ?? null,
    retry_after: e.headers?.get?.('retry-after') ?? null,
  };
}

const scenarios = {
  // GET /v1/models.
  async models() {
    const ids = [], parents = {};
    for await (const m of client.models.list()) {
      ids.push(m.id);
      parents[m.id] = m.parent ?? null;
    }
    return { ids, parents };
  },
  // Many requests at once; each result in order.
  async generate() {
    return { results: await Promise.all(args.requests.map(run)) };
  },
  // One request expected to fail.
  async error() {
    try {
      const result = await run(args.request);
      return { ok: true, result };
    } catch (e) {
      return { ok: false, error: describeError(e) };
    }
  },
  // Reads a few chunks of a long stream, then goes away.
  async disconnect() {
    const { endpoint, ...body } = args.request;
    const api = endpoint === 'chat' ? client.chat.completions : client.completions;
    const stream = await api.create(body);
    let chunks = 0;
    for await (const chunk of stream) {
      if (++chunks >= args.chunks) break;  // breaking out aborts the request
    }
    return { chunks };
  },
  // Many at once against a small queue: some are refused.
  async flood() {
    const settle = (p) => p.then((r) => ({ ok: true, text: r.text }), (e) => ({ ok: false, error: describeError(e) }));
    const results = await Promise.all(Array.from({ length: args.count }, () => settle(run(args.request))));
    return { results };
  },
};

try {
  const out = await scenarios[scenario]();
  process.stdout.write(JSON.stringify(out) + '\n');
} catch (e) {
  process.stdout.write(JSON.stringify({ fatal: String(e), detail: describeError(e) }) + '\n');
  process.exitCode = 1;
}
