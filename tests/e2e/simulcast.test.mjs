// Adaptive stream: a subscriber that shows a video small gets a smaller simulcast layer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { devToken, openPage, waitInPage, inboundSummary, useLab } from './harness.mjs';

// Chromium shares one fake camera per browser process, opened at the first size asked
// for; the host needs 1280x720 (three layers), so it gets a browser of its own.
const lab = useLab({ browser: {}, hostBrowser: {} });

/** In-page: the decoded width of the remote video once frames flow, else 0. */
const remoteWidth = async (summary) => {
  const s = await eval(summary)();
  const v = (s ?? []).find((x) => x.kind === 'video' && x.framesDecoded > 0);
  return v ? v.frameWidth : 0;
};

test('shrinking the video element switches to a smaller layer', async () => {
  const room = 'simulcast-e2e';
  const host = await openPage(lab.hostBrowser, `${lab.server.url}/demo/consult.html?token=${await devToken(lab.server.url, { room, identity: 'host', role: 'host' })}&simulcast=1&width=1280&height=720`);
  const viewer = await openPage(lab.browser, `${lab.server.url}/demo/consult.html?token=${await devToken(lab.server.url, { room, identity: 'viewer', role: 'shopper' })}&simulcast=0&width=320&height=180`);
  await waitInPage(host, () => document.body.dataset.state === 'connected', { what: 'host to connect' });

  // Shown large: wait until the layer delivered is wider than the smallest (320).
  const large = await waitInPage(viewer, async ([widthOf, summary]) => {
    const w = await eval(widthOf)(summary);
    return w > 320 ? w : 0;
  }, { arg: [`(${remoteWidth})`, `(${inboundSummary})`], timeoutMs: 45_000, what: 'a layer wider than 320 px' });

  // Shown as a thumbnail: the server should move this subscriber to the smallest layer.
  await viewer.evaluate(() => {
    const v = /** @type {HTMLElement} */ (document.querySelector('#remote'));
    v.style.width = '160px';
    v.style.flex = 'none';
  });
  const small = await waitInPage(viewer, async ([widthOf, summary]) => {
    const w = await eval(widthOf)(summary);
    return w > 0 && w <= 320 ? w : 0;
  }, { arg: [`(${remoteWidth})`, `(${inboundSummary})`], timeoutMs: 30_000, what: 'the received width to drop to the smallest layer' });
  assert.ok(small < large, `received width dropped from ${large} to ${small}`);
});
