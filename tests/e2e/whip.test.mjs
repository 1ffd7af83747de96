// Going live with WHIP and watching with WHEP, using clients Souk did not write (the
// `whip-whep` package by the WHIP spec's author, in Chromium): H.264 is published, as OBS
// does, to POST /whip/{room}; a viewer on the live page and a WHEP player both decode it;
// DELETE on the session's Location ends it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { devToken, openPage, waitInPage, inboundSummary, startServer, useLab } from './harness.mjs';

const lab = useLab();
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const whipModule = readFileSync(path.join(root, 'node_modules/whip-whep/whip.js'), 'utf8');
const whepModule = readFileSync(path.join(root, 'node_modules/whip-whep/whep.js'), 'utf8');

test('an H.264 WHIP publisher reaches a viewer and a WHEP player, and DELETE ends it', async () => {
  const room = 'whip-e2e';
  const viewer = await openPage(lab.browser, `${lab.server.url}/demo/live.html?room=${room}&identity=viewer&role=audience&wallet=0`);
  await viewer.waitForFunction(() => document.querySelector('header .status')?.textContent === 'connected', null, { timeout: 30_000 });

  const studio = await openPage(lab.browser, `${lab.server.url}/demo/index.html`);
  await studio.route('**/vendor/whip.js', (route) => route.fulfill({ body: whipModule, contentType: 'text/javascript' }));
  const token = await devToken(lab.server.url, { room, identity: 'obs-studio', role: 'host' });
  const published = await studio.evaluate(async ({ room, token }) => {
    const { WHIPClient } = await import('/vendor/whip.js');
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 360 } });
    const pc = new RTCPeerConnection();
    for (const track of stream.getTracks()) {
      const t = pc.addTransceiver(track, { direction: 'sendonly' });
      if (track.kind === 'video') {
        // Send H.264 only, as OBS does.
        const h264 = RTCRtpSender.getCapabilities('video').codecs.filter((c) => c.mimeType === 'video/H264');
        t.setCodecPreferences(h264);
      }
    }
    const client = new WHIPClient();
    await client.publish(pc, `${location.origin}/whip/${room}`, token);
    Object.assign(window, { whip: client, pc });
    return client.resourceURL.pathname;
  }, { room, token });
  assert.match(published, new RegExp(`^/whip/${room}/WS_[0-9a-f]+$`));

  const video = await waitInPage(viewer, async (summary) => {
    const s = await eval(summary)();
    return s?.find((x) => x.kind === 'video' && x.framesDecoded > 10) ?? null;
  }, { arg: `(${inboundSummary})`, timeoutMs: 45_000, what: 'the viewer to decode the WHIP stream' });
  assert.equal(video.codec, 'video/H264', 'H.264 end to end');

  // A WHEP player watches the same room.
  const player = await openPage(lab.browser, `${lab.server.url}/demo/index.html`);
  await player.route('**/vendor/whep.js', (route) => route.fulfill({ body: whepModule, contentType: 'text/javascript' }));
  const viewerToken = await devToken(lab.server.url, { room, identity: 'whep-player', role: 'audience' });
  const location = await player.evaluate(async ({ room, token }) => {
    const { WHEPClient } = await import('/vendor/whep.js');
    const pc = new RTCPeerConnection();
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.addTransceiver('video', { direction: 'recvonly' });
    const client = new WHEPClient();
    await client.view(pc, `${location.origin}/whep/${room}`, token);
    Object.assign(window, { whep: client, playerPc: pc });
    return client.resourceURL.pathname;
  }, { room, token: viewerToken });
  assert.match(location, new RegExp(`^/whep/${room}/WS_[0-9a-f]+$`));
  const played = await waitInPage(player, async () => {
    const stats = await window.playerPc.getStats();
    let found = null;
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video' && s.framesDecoded > 10) {
        found = { framesDecoded: s.framesDecoded, codec: stats.get(s.codecId)?.mimeType };
      }
    });
    return found;
  }, { timeoutMs: 45_000, what: 'the WHEP player to decode video' });
  assert.equal(played.codec, 'video/H264', 'the player gets H.264 as published');
  await player.evaluate(() => window.whep.stop());

  await studio.evaluate(() => window.whip.stop());
  await viewer.waitForFunction(() => document.querySelectorAll('#stage .tile').length === 0, null, { timeout: 30_000 });
  // The session is gone: a second DELETE finds nothing.
  const status = await studio.evaluate(async (p) => (await fetch(p, { method: 'DELETE' })).status, published);
  assert.equal(status, 404);
});

test('a WHIP publisher that vanishes without DELETE is removed', async () => {
  // Its connection is its session: lost for the resume window (2 s here, after ICE
  // notices, about 15 s without checks), the publisher leaves the room.
  const server = await startServer(['--resume-window', '2s']);
  try {
    const room = 'whip-vanish';
    const studio = await openPage(lab.browser, `${server.url}/demo/index.html`);
    await studio.route('**/vendor/whip.js', (route) => route.fulfill({ body: whipModule, contentType: 'text/javascript' }));
    const token = await devToken(server.url, { room, identity: 'obs-gone', role: 'host' });
    await studio.evaluate(async ({ room, token }) => {
      const { WHIPClient } = await import('/vendor/whip.js');
      const stream = await navigator.mediaDevices.getUserMedia({ video: true });
      const pc = new RTCPeerConnection();
      pc.addTransceiver(stream.getVideoTracks()[0], { direction: 'sendonly' });
      await new WHIPClient().publish(pc, `${location.origin}/whip/${room}`, token);
      await new Promise((resolve) => { pc.onconnectionstatechange = () => pc.connectionState === 'connected' && resolve(); });
      pc.close();
    }, { room, token });
    const auth = `Basic ${Buffer.from('devkey:souk-dev-secret-0123456789abcdef').toString('base64')}`;
    const present = async () => {
      const resp = await fetch(`${server.url}/api/v1/rooms/${room}/participants`, { headers: { authorization: auth } });
      if (resp.status === 404) return false;
      const body = await resp.json();
      return body.participants.some((p) => p.identity === 'obs-gone');
    };
    const deadline = Date.now() + 60_000;
    while (await present()) {
      assert.ok(Date.now() < deadline, 'the vanished publisher is still in the room after 60 s');
      await new Promise((r) => setTimeout(r, 500));
    }
  } finally {
    await server.stop();
  }
});
