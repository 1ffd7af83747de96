// The AI assistant in a real browser: a shopper asks the demo shop about a product and an
// order and gets answers grounded in the catalogue, in the language she writes, labelled
// as the AI's; she asks for a person and the staff inbox shows the handoff and its
// summary; staff answer and the assistant steps back. Without a model the shopper sees
// why the assistant is unavailable.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startServer, openPage, sendChat, useModelLab } from './harness.mjs';

// `--dev` serves the bundled demo shop; only the model is configured.
const lab = useModelLab('souk-agent-e2e-', scriptedModel,
  (port) => `[agent.llm]\nbase_url = "http://127.0.0.1:${port}/v1"\nmodel = "scripted"\n`);

/**
 * An OpenAI-compatible model that streams: it searches the catalogue for a question, looks
 * up an order id it sees, transfers when asked for a person, and answers from the tool
 * result in the language its instructions name.
 */
function scriptedModel() {
  return http.createServer(async (req, res) => {
    let raw = '';
    for await (const chunk of req) raw += chunk;
    const { messages } = JSON.parse(raw);
    const language = /Answer in (\w+)/.exec(messages[0].content)?.[1] ?? '?';
    const last = messages[messages.length - 1];
    const said = typeof last.content === 'string' ? last.content : '';
    const chunk = (delta, finish = null) => `data: ${JSON.stringify({ choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
    const call = (name, args) => chunk({ tool_calls: [{ index: 0, id: 'call-1', type: 'function', function: { name, arguments: JSON.stringify(args) } }] }, 'tool_calls');
    let body;
    if (last.role === 'tool') {
      const result = JSON.parse(said);
      const p = result.results?.[0];
      const o = result.order;
      const answer = p ? `(${language}) We have ${p.title} for ${(p.price_minor / 100).toFixed(2)} ${p.currency}.`
        : o ? `(${language}) Order ${o.id} is ${o.status} with ${o.carrier}.`
          : `(${language}) Sorry, I found nothing.`;
      // Streamed in two pieces, as a model writes.
      body = chunk({ content: answer.slice(0, 10) }) + chunk({ content: answer.slice(10) }, 'stop');
    } else if (said.includes('person')) {
      body = call('transfer_to_human', { reason: 'the shopper asked for a person' });
    } else {
      const order = said.match(/\bA\d{4}\b/);
      body = order ? call('get_order', { order_id: order[0] }) : call('search_catalog', { query: said, locale: language === 'Arabic' ? 'ar' : 'en' });
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.end(`${body}data: [DONE]\n\n`);
  }).listen(0, '127.0.0.1');
}

/** Waits until the page shows `n` bubbles from the AI assistant and returns their text. */
async function aiBubbles(page, n) {
  await page.waitForFunction((n) => document.querySelectorAll('#messages .msg.ai').length >= n, n, { timeout: 30_000 });
  return page.evaluate(() => [...document.querySelectorAll('#messages .msg.ai')].map((b) => ({
    label: b.querySelector('.label')?.textContent, text: b.querySelector('.text')?.textContent,
  })));
}

test('a shopper gets grounded answers from the AI assistant, asks for a person, and staff take over', async () => {
  const layla = await openPage(lab.browser, `${lab.server.url}/demo/agent.html?identity=layla`);
  await layla.waitForFunction(() => document.querySelector('header .status')?.textContent === 'connected');

  await sendChat(layla, 'هل عندكم حذاء من القماش؟');
  let ai = await aiBubbles(layla, 2);
  assert.match(ai[0].label, /^AI assistant · ar$/);
  assert.match(ai[0].text, /ذكاء اصطناعي/, 'the first thing the shopper reads is that this is an AI');
  assert.equal(ai[1].text, '(Arabic) We have حذاء رياضي من القماش for 39.99 USD.');

  await sendChat(layla, 'Where is my order A1001?');
  ai = await aiBubbles(layla, 3);
  assert.equal(ai[2].text, '(English) Order A1001 is shipped with Aramex.');
  assert.equal(ai[2].label, 'AI assistant · en');

  await sendChat(layla, 'Can I talk to a person?');
  await layla.waitForSelector('#messages .notice-line[data-agent=handoff]', { timeout: 30_000 });
  assert.equal(await layla.textContent('#standing'), 'handed over to staff');

  // The staff inbox shows the handoff with the assistant's summary.
  const sam = await openPage(lab.browser, `${lab.server.url}/demo/agent.html?view=staff&identity=sam`);
  await sam.waitForSelector('#conversations li .standing.handoff', { timeout: 30_000 });
  await sam.click('#conversations li');
  const summary = await sam.textContent('#messages .handoff-summary');
  assert.match(summary, /the shopper asked for a person/);
  assert.match(summary, /Can I talk to a person\?/);
  assert.match(summary, /get_order/);

  // Sam answers; Layla sees a member of staff, labelled as such.
  await sendChat(sam, 'Hi Layla, Sam here. How can I help?');
  await layla.waitForFunction(() => document.querySelector('#messages .msg.staff .text')?.textContent === 'Hi Layla, Sam here. How can I help?', null, { timeout: 30_000 });
  assert.equal(await layla.textContent('#messages .msg.staff .label'), 'Staff');
  assert.equal(await layla.textContent('#standing'), 'staff answering');
});

test('without a model, the shopper sees that the assistant is unavailable', async () => {
  const plain = await startServer([]);
  try {
    const ana = await openPage(lab.browser, `${plain.url}/demo/agent.html?identity=ana`);
    await ana.waitForFunction(() => document.querySelector('header .status')?.textContent === 'connected');
    await sendChat(ana, 'Do you ship to Riyadh?');
    await ana.waitForSelector('#messages .notice-line.error', { timeout: 30_000 });
    assert.match(await ana.textContent('#messages .notice-line.error'), /no language model is configured/);
    assert.equal(await ana.textContent('#standing'), 'AI assistant unavailable');
  } finally {
    await plain.stop();
  }
});
