// Join to first frame: from Room.connect() to the first remote video frame presented in
// Chromium, on loopback, over many joins. A Chromium page publishes camera video; each
// join opens a fresh page (its own profile) that only subscribes.
//
//   node bench/join_first_frame.mjs [--joins 20]        (uses target/release/souk)
import { startServer, devToken, launchBrowser, openPage } from '../tests/e2e/harness.mjs';

const joins = Number(process.argv[process.argv.indexOf('--joins') + 1] || 20);
process.env.SOUK_BIN ??= new URL('../target/release/souk', import.meta.url).pathname;

const server = await startServer();
const publisherBrowser = await launchBrowser();
const browser = await launchBrowser();
const room = 'bench-first-frame';
const host = await openPage(publisherBrowser,
  `${server.url}/demo/consult.html?token=${await devToken(server.url, { room, identity: 'host', role: 'host' })}&simulcast=0&width=640&height=360`);
await host.waitForFunction(() => document.body.dataset.state === 'connected');
await host.waitForTimeout(2000);

const samples = [];
for (let i = 0; i < joins; i++) {
  const token = await devToken(server.url, { room, identity: `viewer-${i}`, role: 'audience' });
  const page = await openPage(browser, `${server.url}/demo/index.html`);
  const ms = await page.evaluate(async (token) => {
    const { Room } = await import('/sdk/souk.js');
    const video = document.createElement('video');
    video.muted = true;
    video.autoplay = true;
    video.style.width = '640px';
    document.body.append(video);
    const room = new Room();
    const firstFrame = new Promise((resolve) => {
      room.on('track_subscribed', ({ track }) => {
        if (track.kind !== 'video') return;
        room.attach(track, video);
        video.requestVideoFrameCallback(() => resolve(performance.now()));
      });
    });
    const t0 = performance.now();
    await room.connect(location.origin, token);
    const t1 = await firstFrame;
    await room.leave();
    return t1 - t0;
  }, token);
  samples.push(ms);
  await page.context().close();
  await new Promise((r) => setTimeout(r, 400));
}
await browser.close();
await publisherBrowser.close();
await server.stop();

const sorted = [...samples].sort((a, b) => a - b);
const pct = (p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
console.log(JSON.stringify({
  joins,
  p50_ms: Math.round(pct(50)),
  p90_ms: Math.round(pct(90)),
  min_ms: Math.round(sorted[0]),
  max_ms: Math.round(sorted[sorted.length - 1]),
  samples_ms: samples.map(Math.round),
}));
