// H.264, as Safari and OBS prefer it: a publisher sends H.264 and the other side decodes it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { devToken, openPage, waitInPage, inboundSummary, useLab } from './harness.mjs';

const lab = useLab();

test('an H.264 publisher is decoded by a VP8 publisher, and the other way round', async () => {
  const room = 'codec-e2e';
  const page = async (identity, codec) => openPage(lab.browser,
    `${lab.server.url}/demo/consult.html?token=${await devToken(lab.server.url, { room, identity, role: 'staff' })}&simulcast=0&width=640&height=360&codec=${codec}`);
  const h264 = await page('h264-sender', 'h264');
  const vp8 = await page('vp8-sender', 'vp8');
  for (const [viewer, expected] of [[vp8, 'video/H264'], [h264, 'video/VP8']]) {
    const video = await waitInPage(viewer, async (summary) => {
      const s = await eval(summary)();
      return (s ?? []).find((x) => x.kind === 'video' && x.framesDecoded > 10) ?? null;
    }, { arg: `(${inboundSummary})`, what: `decoding ${expected}` });
    assert.equal(video.codec, expected);
  }
});
