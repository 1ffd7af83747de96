// A live sale with a host and two viewers in real browsers: viewer 1 asks for the stage,
// the host approves, and viewer 2 then decodes viewer 1's video; a comment reaches
// everyone (Arabic laid out right to left); a gift updates the leaderboard.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openPage, waitInPage, inboundSummary, useLab } from './harness.mjs';

const lab = useLab();

test('a viewer joins the stage, comments and gifts reach everyone', async () => {
  const base = `${lab.server.url}/demo/live.html?room=live-e2e`;
  const host = await openPage(lab.browser, `${base}&identity=host&role=host`);
  await host.waitForFunction(() => window.soukRoom?.published?.size > 0, null, { timeout: 30_000 });
  const v1 = await openPage(lab.browser, `${base}&identity=viewer-1&role=audience`);
  const v2 = await openPage(lab.browser, `${base}&identity=viewer-2&role=audience`);
  for (const page of [v1, v2]) {
    await page.waitForFunction(() => document.querySelector('#wallet')?.textContent?.includes('20.00'), null, { timeout: 30_000 });
  }

  // Viewer 1 asks; the host sees the hand and approves.
  await v1.click('#raise-hand');
  await host.waitForSelector('#hands li[data-identity="viewer-1"] .approve', { timeout: 30_000 });
  await host.click('#hands li[data-identity="viewer-1"] .approve');
  await v1.waitForFunction(() => window.soukRoom.published.size > 0, null, { timeout: 30_000 });

  // Viewer 2 decodes two videos: the host's and the new co-host's.
  const videos = await waitInPage(v2, async (summary) => {
    const s = await eval(summary)();
    const decoding = (s ?? []).filter((x) => x.kind === 'video' && x.framesDecoded > 0);
    return new Set(decoding.map((x) => x.participantSid)).size >= 2 ? decoding : null;
  }, { arg: `(${inboundSummary})`, timeoutMs: 45_000, what: "viewer 2 to decode the host's and viewer 1's video" });
  const v1Sid = await v1.evaluate(() => window.soukRoom.localParticipant.sid);
  assert.ok(videos.some((x) => x.participantSid === v1Sid), "viewer 1's video is among them");

  // A comment appears for everyone, right to left.
  const text = 'كم سعر الحقيبة؟';
  await v2.fill('#comment input', text);
  await v2.press('#comment input', 'Enter');
  for (const page of [host, v1, v2]) {
    await page.waitForFunction((t) => [...document.querySelectorAll('#danmaku .text')].some((e) => e.textContent === t && e.matches(':dir(rtl)')), text, { timeout: 30_000 });
  }

  // A gift is paid, announced, and lands on everyone's leaderboard.
  await v2.click('#gifts button[data-gift="heart"]');
  for (const page of [host, v1, v2]) {
    await page.waitForFunction(() => document.querySelector('#leaderboard li')?.textContent?.startsWith('host · $5.00'), null, { timeout: 30_000 });
  }
  await v2.waitForFunction(() => document.querySelector('#wallet')?.textContent?.includes('15.00'), null, { timeout: 30_000 });

  // The host pins a product; the card carries the capture time of the host's frame on
  // screen (from its sender reports) and shows on every viewer.
  await host.click('#pin');
  for (const page of [v1, v2]) {
    await page.waitForFunction(() => document.querySelector('#product .title')?.textContent === 'Handwoven leather tote', null, { timeout: 30_000 });
  }
  const capture = await v2.evaluate(() => window.soukRoom.live.pinned?.capture_ms);
  assert.ok(Math.abs(capture - Date.now()) < 60_000, `capture time ${capture} is the host's recent frame`);
});
