// A shop embeds the consultation page in a cross-origin iframe; the browser blocks audio
// until the shopper clicks, and the SDK says so instead of staying silent.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startServer, devToken, launchBrowser, openPage, waitInPage, inboundSummary } from './harness.mjs';

let server;
let staffBrowser;
let shopperBrowser;
let shop;
before(async () => {
  server = await startServer();
  staffBrowser = await launchBrowser();
  shopperBrowser = await launchBrowser([], { autoplay: false });
  // The merchant's own site: another origin that frames the consultation page.
  shop = http.createServer((req, res) => {
    const src = new URL(req.url, 'http://x').searchParams.get('src');
    res.setHeader('content-type', 'text/html');
    res.end(`<!doctype html><title>Shop</title><h1>Leather goods</h1>
      <iframe id="souk" allow="camera; microphone; autoplay" width="1100" height="700" src="${src}"></iframe>`);
  });
  await new Promise((r) => shop.listen(0, '127.0.0.1', r));
});
after(async () => {
  await staffBrowser?.close();
  await shopperBrowser?.close();
  await server?.stop();
  shop?.close();
});

test('the consultation works inside a shop iframe, and sound starts after a click', async () => {
  const room = 'embed-e2e';
  const staffToken = await devToken(server.url, { room, identity: 'staff', role: 'staff' });
  await openPage(staffBrowser, `${server.url}/demo/consult.html?token=${staffToken}&simulcast=0&width=640&height=360`);

  const shopperToken = await devToken(server.url, { room, identity: 'shopper', role: 'shopper' });
  const src = `${server.url}/demo/consult.html?token=${shopperToken}&simulcast=0&width=640&height=360`;
  const shopPage = await openPage(shopperBrowser, `http://127.0.0.1:${shop.address().port}/?src=${encodeURIComponent(src)}`);
  const frame = await (await shopPage.waitForSelector('#souk')).contentFrame();
  assert.notEqual(new URL(frame.url()).origin, new URL(shopPage.url()).origin, 'the iframe is cross-origin');

  await waitInPage(frame, async (summary) => {
    const s = await eval(summary)();
    return (s ?? []).some((x) => x.kind === 'video' && x.framesDecoded > 10) && (s ?? []).some((x) => x.kind === 'audio' && x.bytesReceived > 0);
  }, { arg: `(${inboundSummary})`, what: 'video and audio inside the iframe' });
  assert.equal(await frame.evaluate(() => /** @type {any} */ (window).soukRoom.publisher?.getSenders().length), 2, 'camera and microphone published from the iframe');

  // No gesture yet: the SDK reported that audio is blocked, and the page shows a button.
  await frame.waitForSelector('.notice.audio.shown', { timeout: 30_000 });
  await frame.click('#unmute');
  await waitInPage(frame, () => {
    const audio = document.querySelector('body > audio');
    return audio instanceof HTMLAudioElement && !audio.paused && !document.querySelector('.notice.audio.shown');
  }, { what: 'audio to play after the click' });
});
