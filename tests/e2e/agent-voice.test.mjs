// The AI agent by voice, through real WebRTC: Chromium plays a spoken question (made
// with espeak-ng) as its microphone in a consultation room; the agent (souk-client inside
// the server) hears it with pocketsphinx, asks the scripted model, which searches the
// catalogue, and answers with espeak-ng. The shopper's page shows both sides' captions,
// the agent's labelled as the AI's, and receives the agent's audio. Then the shopper
// talks over a long answer, and the agent's audio at the shopper stops.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { once } from 'node:events';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, launchBrowser, openPage, writeWav } from './harness.mjs';

const LONG = 'Our canvas sneakers come in white, black, navy and olive. Every pair has a rubber sole and a cotton lining. '
  + 'Sizes run from thirty six to forty four, and they ship from Shenzhen in two days. Returns are free for thirty days.';

/** @type {any} */
const lab = {};

/**
 * An OpenAI-compatible model that streams. A question gets a catalogue search and a
 * short answer; with `long`, a long answer; with `handoff`, a transfer to a person.
 */
function scriptedModel({ long, handoff }) {
  return http.createServer(async (req, res) => {
    let raw = '';
    for await (const chunk of req) raw += chunk;
    const { messages } = JSON.parse(raw);
    const last = messages[messages.length - 1];
    const chunk = (delta, finish = null) => `data: ${JSON.stringify({ choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
    let body;
    if (last.role === 'tool') {
      const p = JSON.parse(last.content).results?.[0];
      body = chunk({ content: p ? `We have the ${p.title} for ${(p.price_minor / 100).toFixed(2)} dollars.` : 'Sorry, I found nothing.' }, 'stop');
    } else if (handoff) {
      const call = { index: 0, id: 'call-1', type: 'function', function: { name: 'transfer_to_human', arguments: JSON.stringify({ reason: 'the shopper asked for a person' }) } };
      body = chunk({ tool_calls: [call] }, 'tool_calls');
    } else if (long) {
      body = LONG.split(' ').map((w) => chunk({ content: `${w} ` })).join('') + chunk({}, 'stop');
    } else {
      const call = { index: 0, id: 'call-1', type: 'function', function: { name: 'search_catalog', arguments: JSON.stringify({ query: 'canvas sneaker' }) } };
      body = chunk({ tool_calls: [call] }, 'tool_calls');
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.end(`${body}data: [DONE]\n\n`);
  }).listen(0, '127.0.0.1');
}

/**
 * A WAV of `text` spoken by espeak-ng, between `before` and `after` seconds of silence;
 * Chromium loops it as the microphone.
 */
function spokenWav(file, text, before, after) {
  const spoken = readFileSync(execFileSync('sh', ['-c', `espeak-ng -v en-us -s 140 -w ${file}.raw.wav "${text}" && echo ${file}.raw.wav`]).toString().trim());
  const rate = spoken.readUInt32LE(24);
  const dataAt = spoken.indexOf('data') + 8;
  const speech = spoken.subarray(dataAt);
  const silence = (s) => Buffer.alloc(Math.round(rate * s) * 2);
  return writeWav(file, Buffer.concat([silence(before), speech, silence(after)]), rate);
}

/** Where scripts/test unpacks ONNX Runtime and the Silero and smart-turn models. */
const onnxDir = process.env.SOUK_ONNX_DIR ?? path.resolve(import.meta.dirname, '../../.cache/onnx');

/**
 * Starts a server whose agent uses a scripted model, and a browser whose microphone says
 * `text`. With `models`, the agent detects speech with Silero and ends turns with smart-turn.
 */
async function start(name, { long = false, handoff = false, models = false, text, before, after }) {
  const model = scriptedModel({ long, handoff });
  await once(model, 'listening');
  const config = path.join(lab.dir, `${name}.toml`);
  const neural = models
    ? `onnxruntime = "${onnxDir}/libonnxruntime.so"\nvad = "silero"\nsilero_model = "${onnxDir}/silero_vad.onnx"\n`
      + `turn_detector = "smart_turn"\nsmart_turn_model = "${onnxDir}/smart-turn.onnx"\n`
    : '';
  writeFileSync(config, `[agent]\n${neural}[agent.llm]\nbase_url = "http://127.0.0.1:${model.address().port}/v1"\nmodel = "scripted"\n`);
  const server = await startServer(['--config', config]);
  const wav = spokenWav(path.join(lab.dir, `${name}.wav`), text, before, after);
  const browser = await launchBrowser([`--use-file-for-fake-audio-capture=${wav}`]);
  lab.cleanup.push(async () => { await browser.close(); await server.stop(); model.close(); });
  return { server, browser };
}

before(() => {
  lab.dir = mkdtempSync(path.join(os.tmpdir(), 'souk-agent-voice-e2e-'));
  lab.cleanup = [];
});

after(async () => {
  for (const done of lab.cleanup) await done();
  rmSync(lab.dir, { recursive: true, force: true });
});

/** Captions on the page: who said what. */
const captions = () => [...document.querySelectorAll('#captions li')].map((li) => ({
  ai: li.classList.contains('ai'), interrupted: li.classList.contains('interrupted'),
  who: li.querySelector('.who').textContent, text: li.querySelector('.text').textContent,
}));

/** Audio energy and bytes received from the agent so far. */
const agentAudio = async () => {
  const { inbound } = await window.soukRoom.getStats();
  const audio = inbound.filter((s) => s.kind === 'audio');
  return { bytes: audio.reduce((n, s) => n + (s.bytesReceived ?? 0), 0), energy: audio.reduce((n, s) => n + (s.totalAudioEnergy ?? 0), 0) };
};

test('a spoken question gets a spoken answer from the catalogue, with labelled captions', async () => {
  const { server, browser } = await start('answer', { long: false, text: 'do you have canvas sneakers', before: 3, after: 9 });
  const page = await openPage(browser, `${server.url}/demo/agent.html?identity=layla&voice=1`);
  await page.waitForFunction(() => document.querySelector('#agent-state')?.dataset.state === 'joined'
    || document.querySelectorAll('#captions li').length > 0, null, { timeout: 60_000 });
  // The first thing said is that this is an AI.
  await page.waitForFunction(() => document.querySelector('#captions li.ai'), null, { timeout: 60_000 });
  const first = (await page.evaluate(captions))[0];
  assert.match(first.who, /^AI assistant · en$/);
  assert.match(first.text, /AI assistant/);
  // The shopper's words are captioned, then the agent answers from the catalogue.
  await page.waitForFunction(() => [...document.querySelectorAll('#captions li.ai .text')].some((t) => t.textContent.includes('Canvas sneaker')), null, { timeout: 60_000 });
  const all = await page.evaluate(captions);
  const heard = all.find((c) => !c.ai);
  assert.ok(heard && heard.text.length > 0, `the shopper's speech was transcribed: ${JSON.stringify(all)}`);
  assert.equal(all.find((c) => c.text.includes('Canvas sneaker')).text, 'We have the Canvas sneaker for 39.99 dollars.');
  // And it was heard: audio with energy arrived from the agent.
  await page.waitForFunction(async () => {
    const { inbound } = await window.soukRoom.getStats();
    return inbound.some((s) => s.kind === 'audio' && (s.totalAudioEnergy ?? 0) > 0.01);
  }, null, { timeout: 30_000, polling: 500 });
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  assert.match(metrics, /souk_agent_voice_stage_seconds_count\{stage="first_audio_sent"\} [1-9]/);
  // Once it has finished its answer and is sent away, the agent leaves its session's
  // record: stage times and what was said.
  await page.waitForFunction(() => document.querySelector('#agent-state')?.dataset.state === 'listening', null, { timeout: 30_000 });
  const api = (method) => fetch(`${server.url}/api/v1/rooms/consult-layla/agent`, {
    method, headers: { authorization: `Basic ${Buffer.from('devkey:souk-dev-secret-0123456789abcdef').toString('base64')}` },
  });
  assert.equal((await api('DELETE')).status, 204);
  let record;
  for (const until = Date.now() + 30_000; !record && Date.now() < until;) {
    record = (await (await api('GET')).json()).sessions[0];
    if (!record) await new Promise((r) => setTimeout(r, 250));
  }
  assert.ok(record, 'a session record');
  assert.equal(record.shopper, 'layla');
  assert.ok(record.turns.length >= 1 && record.turns[0].first_audio_sent_ms > 0, JSON.stringify(record.turns));
  assert.ok(record.transcript.some((l) => l.speaker === 'agent' && l.text.includes('Canvas sneaker')), JSON.stringify(record.transcript));
});

test('talking over a long answer stops the agent at the shopper', async () => {
  // The question repeats every ~9 s: the second time, the agent is in the middle of a
  // long answer.
  const { server, browser } = await start('barge', { long: true, text: 'tell me about the sneakers please', before: 3, after: 4 });
  const page = await openPage(browser, `${server.url}/demo/agent.html?identity=omar&voice=1`);
  await page.waitForFunction(() => document.querySelector('#captions li.interrupted'), null, { timeout: 90_000 })
    .catch(async (e) => { throw new Error(`${e.message}; captions: ${JSON.stringify(await page.evaluate(captions))}`); });
  const cut = (await page.evaluate(captions)).find((c) => c.interrupted);
  assert.ok(cut.ai && LONG.startsWith(cut.text) && cut.text.length < LONG.length, `kept what was heard: ${cut.text}`);
  // The agent's audio at the shopper stops: its energy stops growing while the shopper
  // talks on (polled, generous deadline).
  await page.waitForFunction(async () => {
    const { inbound } = await window.soukRoom.getStats();
    const energy = inbound.filter((s) => s.kind === 'audio').reduce((n, s) => n + (s.totalAudioEnergy ?? 0), 0);
    const last = window.lastEnergy;
    window.lastEnergy = energy;
    return last !== undefined && energy - last < 1e-4;
  }, null, { timeout: 30_000, polling: 500 });
});

test('asking for a person by voice hands over to the staff inbox (Silero and smart-turn hearing)', async () => {
  const { server, browser } = await start('handoff', { handoff: true, models: true, text: 'can I talk to a person please', before: 3, after: 9 });
  const page = await openPage(browser, `${server.url}/demo/agent.html?identity=ana&voice=1`);
  await page.waitForFunction(() => document.querySelector('#agent-state')?.dataset.state === 'handoff', null, { timeout: 60_000 })
    .catch(async (e) => { throw new Error(`${e.message}; captions: ${JSON.stringify(await page.evaluate(captions))}`); });
  // smart-turn judged the turn that asked for a person.
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  const verdicts = [...metrics.matchAll(/^souk_agent_voice_turn_verdicts_total\{verdict="\w+"\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
  assert.ok(verdicts >= 1, metrics.split('\n').filter((l) => l.includes('turn_verdicts')).join('\n'));
  // The agent says so, in a caption labelled as the AI's.
  await page.waitForFunction(() => [...document.querySelectorAll('#captions li.ai .text')].some((t) => t.textContent.includes('member of our team')), null, { timeout: 30_000 });
  // Staff find it in their inbox, with what the shopper asked.
  const staff = await openPage(browser, `${server.url}/demo/agent.html?view=staff&identity=sam`);
  await staff.waitForSelector('#conversations li .standing.handoff', { timeout: 30_000 });
  await staff.click('#conversations li');
  const summary = await staff.textContent('#messages .handoff-summary');
  assert.match(summary, /Last asked: \S+/, summary);
});
