// A 4-person group call: every page decodes the three others' video.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { devToken, openPage, waitInPage, inboundSummary, useLab } from './harness.mjs';

const lab = useLab();

test('four people in a call each decode three remote videos', async () => {
  const room = 'call-e2e';
  const pages = [];
  for (let i = 0; i < 4; i++) {
    const token = await devToken(lab.server.url, { room, identity: `person-${i}`, role: 'staff' });
    // 640x360 without simulcast keeps four encoders within two cores.
    pages.push(await openPage(lab.browser, `${lab.server.url}/demo/call.html?token=${token}&simulcast=0&width=640&height=360`));
  }
  for (const [i, page] of pages.entries()) {
    const videos = await waitInPage(page, async (summary) => {
      const s = await eval(summary)();
      const decoding = (s ?? []).filter((x) => x.kind === 'video' && x.framesDecoded > 0);
      const senders = new Set(decoding.map((x) => x.participantSid));
      return senders.size >= 3 ? decoding : null;
    }, { arg: `(${inboundSummary})`, timeoutMs: 45_000, what: `page ${i} to decode 3 remote videos` });
    assert.equal(new Set(videos.map((v) => v.participantSid)).size, 3);
  }
  // Each page shows a tile per person.
  for (const page of pages) assert.equal(await page.locator('#grid .tile').count(), 4);
});
