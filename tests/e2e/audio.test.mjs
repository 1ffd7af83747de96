// Opus DTX: the server's answer asks a publisher's encoder to pause in silence, so a
// silent microphone sends a few audio packets a second instead of fifty, and the other
// side of the call still receives the audio track.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, launchBrowser, openPage, waitInPage, devToken, inboundSummary, writeWav } from './harness.mjs';

/** @type {any} */
const lab = {};

before(async () => {
  lab.dir = mkdtempSync(path.join(os.tmpdir(), 'souk-audio-e2e-'));
  const silence = writeWav(path.join(lab.dir, 'silence.wav'), Buffer.alloc(48_000 * 2 * 2), 48_000);
  lab.server = await startServer();
  lab.browser = await launchBrowser([`--use-file-for-fake-audio-capture=${silence}`]);
});

after(async () => {
  await lab.browser?.close();
  await lab.server?.stop();
  rmSync(lab.dir, { recursive: true, force: true });
});

/** In-page: the publisher's audio packets sent so far, and when that was read. */
const audioSent = async () => {
  const room = /** @type {any} */ (window).soukRoom;
  const { outbound } = (await room?.getStats()) ?? { outbound: [] };
  const audio = outbound.find((s) => s.kind === 'audio');
  return audio ? { packets: audio.packetsSent, at: performance.now() } : null;
};

test('a silent microphone sends Opus DTX, and the listener still gets the audio track', async () => {
  const room = 'dtx-e2e';
  const open = async (identity) => openPage(lab.browser,
    `${lab.server.url}/demo/consult.html?token=${await devToken(lab.server.url, { room, identity, role: 'staff' })}&simulcast=0&width=320&height=180`);
  const speaker = await open('silent-seller');
  const listener = await open('listener');

  await waitInPage(listener, async (summary) => {
    const s = await eval(summary)();
    return (s ?? []).find((x) => x.kind === 'audio' && x.bytesReceived > 0) ?? null;
  }, { arg: `(${inboundSummary})`, what: "the seller's audio at the listener" });

  const answer = await speaker.evaluate(() => /** @type {any} */ (window).soukRoom.publisher.remoteDescription.sdp);
  assert.match(answer, /a=fmtp:\d+ [^\r\n]*usedtx=1/, 'the answer asks for DTX');

  // Packets sent over at least three seconds of silence: 50 a second without DTX.
  const first = await waitInPage(speaker, audioSent, { what: 'audio stats' });
  const later = await waitInPage(speaker, async ({ fn, since }) => {
    const now = await eval(fn)();
    return now && now.at - since.at >= 3000 ? now : null;
  }, { arg: { fn: `(${audioSent})`, since: first }, what: 'three seconds of audio stats' });
  const perSecond = ((later.packets - first.packets) * 1000) / (later.at - first.at);
  assert.ok(perSecond < 20, `a silent microphone sent ${perSecond.toFixed(1)} audio packets a second`);
});
