// Strata through the official `openai` npm package (v6): the scenarios of the Go SDK tests
// (internal/stack/e2e_test.go, internal/platform/*_test.go), against a running stack.
//
//   STRATA_BASE_URL=http://127.0.0.1:8080/v1 STRATA_API_KEY=sk-... STRATA_MODEL=... node scenarios.mjs
//
// Prints one line per scenario (PASS / FAIL name: reason) and exits 1 when any failed.
// internal/stack/npm_test.go starts the stack and runs this script.
//
// The engines below are Strata's simulator: it calls the tool whose name the last user message
// contains (internal/engine/sim/toolcall.go), with arguments that are an example of the tool's
// JSON schema (strings are "example"), so the file searched here contains "example".
import assert from 'node:assert/strict';
import OpenAI, { toFile } from 'openai';

const baseURL = process.env.STRATA_BASE_URL;
const apiKey = process.env.STRATA_API_KEY;
const model = process.env.STRATA_MODEL;
if (!baseURL || !apiKey || !model) {
  console.error('set STRATA_BASE_URL, STRATA_API_KEY and STRATA_MODEL');
  process.exit(2);
}
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60_000 });

const weatherTool = {
  type: 'function',
  name: 'get_weather',
  description: 'Current weather of a city.',
  parameters: {
    type: 'object',
    properties: { city: { type: 'string' } },
    required: ['city'],
    additionalProperties: false,
  },
  strict: true,
};

const scenarios = [];
const scenario = (name, fn) => scenarios.push({ name, fn });
const shared = {};

scenario('responses create', async () => {
  const res = await client.responses.create({ model, input: 'Say hello in one word.', max_output_tokens: 16 });
  assert.equal(res.object, 'response');
  assert.match(res.id, /^resp_/);
  assert.ok(['completed', 'incomplete'].includes(res.status), res.status);
  assert.ok(res.output_text.length > 0, 'output_text');
  assert.ok(res.usage.input_tokens > 0 && res.usage.output_tokens > 0, 'usage');
  const got = await client.responses.retrieve(res.id);
  assert.equal(got.output_text, res.output_text, 'stored and retrieved');
  const items = await client.responses.inputItems.list(res.id);
  assert.equal(items.data.length, 1);
  assert.equal(items.data[0].role, 'user');
});

scenario('responses stream', async () => {
  const stream = await client.responses.create({ model, input: 'Tell me about prefix caching.', max_output_tokens: 24, stream: true });
  let seq = 0;
  let text = '';
  let final;
  for await (const ev of stream) {
    assert.equal(ev.sequence_number, seq++, 'consecutive sequence numbers');
    if (ev.type === 'response.output_text.delta') text += ev.delta;
    if (ev.type === 'response.completed' || ev.type === 'response.incomplete') final = ev.response;
  }
  assert.ok(final, 'a final event');
  assert.equal(final.output_text ?? final.output[0].content[0].text, text, 'deltas add up to the text');
  assert.ok(text.length > 0);

  // The helper of the SDK (responses.stream) over the same endpoint.
  const s2 = client.responses.stream({ model, input: 'Once more.', max_output_tokens: 8 });
  const done = await s2.finalResponse();
  assert.ok(done.output_text.length > 0);
});

scenario('function call round trip', async () => {
  const first = await client.responses.create({ model, input: 'Call get_weather for Paris.', tools: [weatherTool] });
  assert.equal(first.status, 'completed');
  const call = first.output.find((it) => it.type === 'function_call');
  assert.ok(call, `a function_call in ${JSON.stringify(first.output)}`);
  assert.equal(call.name, 'get_weather');
  const args = JSON.parse(call.arguments);
  assert.equal(typeof args.city, 'string');
  const second = await client.responses.create({
    model,
    previous_response_id: first.id,
    tools: [weatherTool],
    input: [{ type: 'function_call_output', call_id: call.call_id, output: '22C and sunny' }],
    max_output_tokens: 16,
  });
  assert.ok(['completed', 'incomplete'].includes(second.status));
  assert.ok(second.output.some((it) => it.type === 'message'), 'the model answers after the tool result');
  assert.equal(second.previous_response_id, first.id);
});

scenario('conversations', async () => {
  const conv = await client.conversations.create({
    metadata: { topic: 'sdk' },
    items: [{ type: 'message', role: 'user', content: 'Remember the number 7.' }],
  });
  assert.match(conv.id, /^conv_/);
  const res = await client.responses.create({ model, conversation: conv.id, input: 'What number?', max_output_tokens: 16 });
  assert.equal(res.conversation?.id, conv.id);
  const items = [];
  for await (const it of client.conversations.items.list(conv.id, { order: 'asc' })) items.push(it);
  assert.ok(items.length >= 3, `items: ${items.length}`);
  assert.equal(items[0].type, 'message');
  const got = await client.conversations.retrieve(conv.id);
  assert.equal(got.metadata.topic, 'sdk');
  const updated = await client.conversations.update(conv.id, { metadata: { topic: 'sdk2' } });
  assert.equal(updated.metadata.topic, 'sdk2');
  const del = await client.conversations.delete(conv.id);
  assert.equal(del.deleted, true);
  await assert.rejects(client.conversations.retrieve(conv.id), (e) => e.status === 404);
});

scenario('file upload', async () => {
  const content = 'An example of routing: the router sends a request to the replica whose KV cache holds its prefix.\n';
  const file = await client.files.create({ file: await toFile(Buffer.from(content), 'notes.md'), purpose: 'assistants' });
  assert.match(file.id, /^file-/);
  assert.equal(file.filename, 'notes.md');
  assert.equal(file.bytes, Buffer.byteLength(content));
  const got = await client.files.retrieve(file.id);
  assert.equal(got.id, file.id);
  const body = await (await client.files.content(file.id)).text();
  assert.equal(body, content);
  const ids = [];
  for await (const f of client.files.list({ purpose: 'assistants' })) ids.push(f.id);
  assert.ok(ids.includes(file.id));
  shared.file = file;
});

scenario('vector store create + file + search', async () => {
  assert.ok(shared.file, 'needs the uploaded file');
  const vs = await client.vectorStores.create({ name: 'sdk-node' });
  assert.match(vs.id, /^vs_/);
  const vf = await client.vectorStores.files.createAndPoll(vs.id, { file_id: shared.file.id });
  assert.equal(vf.status, 'completed', JSON.stringify(vf.last_error));
  const page = await client.vectorStores.search(vs.id, { query: 'replica prefix' });
  const hits = [];
  for await (const h of page) hits.push(h);
  assert.ok(hits.length > 0, 'a hit');
  assert.equal(hits[0].file_id, shared.file.id);
  assert.match(hits[0].content[0].text, /KV cache/);
  shared.vs = vs;
});

// Tenant identity (contract C5): a second key of the same tenant shares every object; a key of
// another tenant gets 404 for each, as for an object that does not exist.
scenario('tenant isolation', async () => {
  const sameKey = process.env.STRATA_API_KEY_SAME_TENANT;
  const otherKey = process.env.STRATA_API_KEY_OTHER_TENANT;
  assert.ok(sameKey && otherKey, 'set STRATA_API_KEY_SAME_TENANT and STRATA_API_KEY_OTHER_TENANT');
  assert.ok(shared.file && shared.vs, 'needs the file and the vector store');
  const same = new OpenAI({ baseURL, apiKey: sameKey, maxRetries: 0 });
  const other = new OpenAI({ baseURL, apiKey: otherKey, maxRetries: 0 });
  const res = await client.responses.create({ model, input: 'Mine.', max_output_tokens: 8 });
  const conv = await client.conversations.create({ items: [{ type: 'message', role: 'user', content: 'Mine too.' }] });
  const reads = {
    response: (c) => c.responses.retrieve(res.id),
    'input items': (c) => c.responses.inputItems.list(res.id),
    continuation: (c) => c.responses.create({ model, previous_response_id: res.id, input: 'Go on.', max_output_tokens: 8, store: false }),
    conversation: (c) => c.conversations.retrieve(conv.id),
    'conversation items': (c) => c.conversations.items.list(conv.id),
    file: (c) => c.files.retrieve(shared.file.id),
    'file content': (c) => c.files.content(shared.file.id),
    'vector store': (c) => c.vectorStores.retrieve(shared.vs.id),
    'vector store search': (c) => c.vectorStores.search(shared.vs.id, { query: 'replica' }),
  };
  for (const [name, read] of Object.entries(reads)) {
    await assert.rejects(read(other), (e) => e.status === 404, `another tenant: ${name} must be 404`);
    await read(same); // the tenant's second key: no error
  }
  const otherFiles = [];
  for await (const f of other.files.list()) otherFiles.push(f.id);
  assert.ok(!otherFiles.includes(shared.file.id), 'another tenant does not list the file');
  await assert.rejects(new OpenAI({ baseURL, apiKey: 'sk-strata-unknown', maxRetries: 0 }).files.list(), (e) => e.status === 401);
  await same.conversations.delete(conv.id);
});

scenario('file_search through responses', async () => {
  assert.ok(shared.vs, 'needs the vector store');
  const res = await client.responses.create({
    model,
    input: 'Use file_search to find how routing works.',
    tools: [{ type: 'file_search', vector_store_ids: [shared.vs.id] }],
    include: ['file_search_call.results'],
    max_output_tokens: 32,
  });
  const fs = res.output.find((it) => it.type === 'file_search_call');
  assert.ok(fs, `a file_search_call in ${JSON.stringify(res.output)}`);
  assert.equal(fs.status, 'completed');
  assert.ok(fs.results.length > 0, 'results included');
  assert.equal(fs.results[0].file_id, shared.file.id);
  assert.ok(res.output.some((it) => it.type === 'message'), 'the model answers with the results');

  const del = await client.vectorStores.delete(shared.vs.id);
  assert.equal(del.deleted, true);
  const fdel = await client.files.delete(shared.file.id);
  assert.equal(fdel.deleted, true);
});

let failed = 0;
for (const { name, fn } of scenarios) {
  try {
    await fn();
    console.log(`PASS ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e?.stack ?? e}`);
  }
}
console.log(`${scenarios.length - failed}/${scenarios.length} scenarios passed`);
process.exit(failed ? 1 : 0);
