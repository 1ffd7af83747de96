// Two people chat in real browsers. One goes offline (its WebSocket is cut), misses
// messages, comes back, and sees them in order with the right unread count; Arabic reads
// right to left; a message is translated by the configured (scripted) model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { openPage, sendChat, useModelLab } from './harness.mjs';

const ARABIC = 'مرحبا، هل المقاس 38 متوفر؟';
const TRANSLATED = 'Hello, is size 38 available?';

/** An OpenAI-compatible endpoint that answers every completion with TRANSLATED. */
function translator() {
  return http.createServer(async (req, res) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    const ok = req.url === '/v1/chat/completions' && JSON.parse(body).messages?.length === 2;
    res.writeHead(ok ? 200 : 400, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ choices: [{ index: 0, message: { role: 'assistant', content: TRANSLATED } }] }));
  }).listen(0, '127.0.0.1');
}

const lab = useModelLab('souk-chat-e2e-', translator,
  (port) => `[chat.translator]\nbase_url = "http://127.0.0.1:${port}/v1"\nmodel = "scripted"\n`);


/** Texts of the message bubbles in the open conversation. */
const bubbleTexts = () => [...document.querySelectorAll('#messages .msg:not(.pending) .text')].map((e) => e.textContent);

test('an offline reader catches up in order, with unread count, RTL and translation', async () => {
  const base = `${lab.server.url}/demo/chat.html`;
  const ana = await openPage(lab.browser, `${base}?identity=ana&peer=bruno&lang=en`);
  const bruno = await openPage(lab.browser, `${base}?identity=bruno&lang=en`);
  await ana.waitForSelector('#thread:not([hidden])');
  await bruno.waitForFunction(() => document.querySelector('header .status')?.textContent === 'connected');

  await sendChat(ana, 'hello');
  await bruno.waitForFunction(() => document.querySelector('#conversations .badge')?.textContent === '1', null, { timeout: 30_000 });

  // Bruno opens the conversation; Ana starts typing and he sees it.
  await bruno.click('#conversations li');
  await bruno.waitForSelector('#thread:not([hidden])');
  await ana.type('#compose input[name=text]', 'let me check', { delay: 150 });
  await bruno.waitForFunction(() => document.querySelector('#typing')?.textContent === 'ana is typing…', null, { timeout: 30_000 });
  await ana.fill('#compose input[name=text]', '');
  // Bruno has read "hello"; Ana's tick turns to read.
  await ana.waitForFunction(() => document.querySelector('#messages .msg.mine .ticks')?.classList.contains('read'), null, { timeout: 30_000 });

  // Bruno goes back to the inbox view and then offline: his socket is cut.
  await bruno.evaluate(() => { window.soukChat.disconnect(); });
  await bruno.reload();
  await bruno.waitForFunction(() => document.querySelector('header .status')?.textContent === 'connected');
  await bruno.evaluate(() => { window.soukChat.disconnect(); });
  await bruno.waitForFunction(() => document.querySelector('header .status')?.textContent === 'offline');

  for (const text of ['one', 'two', ARABIC]) await sendChat(ana, text);
  await ana.waitForFunction((n) => document.querySelectorAll('#messages .msg.mine:not(.pending)').length === n, 4, { timeout: 30_000 });
  assert.deepEqual(await bruno.evaluate(() => [window.soukChat.ws, document.querySelectorAll('#conversations .badge').length]),
    [null, 0], 'an offline page has no socket and nothing new');

  // Back online: the missed messages arrive, counted as unread.
  await bruno.evaluate(() => window.soukChat.connect());
  await bruno.waitForFunction(() => document.querySelector('#conversations .badge')?.textContent === '3', null, { timeout: 30_000 });
  await bruno.click('#conversations li');
  await bruno.waitForFunction((n) => document.querySelectorAll('#messages .msg .text').length === n, 4, { timeout: 30_000 });
  assert.deepEqual(await bruno.evaluate(bubbleTexts), ['hello', 'one', 'two', ARABIC], 'in the order sent');
  assert.equal(await bruno.evaluate(() => document.querySelectorAll('#conversations .badge').length), 0, 'read once opened');

  // Arabic is laid out right to left; Latin text left to right.
  const dirs = await bruno.evaluate(() => [...document.querySelectorAll('#messages .msg .text')].map((e) => e.matches(':dir(rtl)')));
  assert.deepEqual(dirs, [false, false, false, true]);

  // Translation on request, from the configured model.
  await bruno.click('#messages .msg:last-child .translate');
  await bruno.waitForFunction((t) => document.querySelector('#messages .msg:last-child .translation')?.textContent === t, TRANSLATED, { timeout: 30_000 });

  // Product and order cards render as cards, not text.
  await ana.click('#send-product');
  await ana.click('#send-order');
  await bruno.waitForSelector('#messages .msg.product .product-card .title', { timeout: 30_000 });
  await bruno.waitForSelector('#messages .msg.order .order-card .status', { timeout: 30_000 });
  assert.equal(await bruno.textContent('#messages .msg.product .product-card .title'), 'Handwoven leather tote');

  // Ana's last message shows as read.
  await ana.waitForFunction(() => [...document.querySelectorAll('#messages .msg.mine .ticks')].at(-1)?.classList.contains('read'), null, { timeout: 30_000 });
});
