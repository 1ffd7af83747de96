// A 1:1 consultation through the SFU: each side decodes the other's video and receives audio.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { devToken, openPage, waitInPage, inboundSummary, useLab } from './harness.mjs';

const lab = useLab();

test('staff and shopper see and hear each other', async () => {
  const room = 'consult-e2e';
  const staff = await openPage(lab.browser, `${lab.server.url}/demo/consult.html?token=${await devToken(lab.server.url, { room, identity: 'staff-1', role: 'staff' })}`);
  const shopper = await openPage(lab.browser, `${lab.server.url}/demo/consult.html?token=${await devToken(lab.server.url, { room, identity: 'shopper-1', role: 'shopper' })}`);

  for (const [name, page] of [['staff', staff], ['shopper', shopper]]) {
    const media = await waitInPage(page, async (summary) => {
      const s = await eval(summary)();
      const video = s?.find((x) => x.kind === 'video' && x.framesDecoded > 0);
      const audio = s?.find((x) => x.kind === 'audio' && x.bytesReceived > 0);
      return video && audio ? { video, audio } : null;
    }, { arg: `(${inboundSummary})`, timeoutMs: 30_000, what: `${name} to decode video and receive audio` });
    assert.ok(media.video.framesDecoded > 0, `${name} decoded frames`);
    assert.ok(media.audio.bytesReceived > 0, `${name} received audio`);
  }
  // Each side is told how its connection is doing; on loopback, excellent.
  for (const page of [staff, shopper]) {
    await page.waitForFunction(() => document.querySelector('header .quality')?.textContent === 'connection: excellent', null, { timeout: 30_000 });
  }
  // The page shows who is on the other side.
  assert.equal(await staff.textContent('#remote .label'), 'shopper-1', 'staff page names the shopper');
  assert.equal(await shopper.textContent('#remote .label'), 'staff-1', 'shopper page names staff');
});
