// Session lifecycle in the browser: leave and rejoin, and resume after the socket is cut.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { devToken, openPage, waitInPage, inboundSummary, useLab } from './harness.mjs';

const lab = useLab();

/** In-page: frames decoded so far from the participant with this identity. */
const framesFrom = async ([summary, identity]) => {
  const room = /** @type {any} */ (window).soukRoom;
  const p = room && [...room.participants.values()].find((x) => x.identity === identity);
  if (!p) return 0;
  const s = await eval(summary)();
  return (s ?? []).filter((x) => x.kind === 'video' && x.participantSid === p.sid).reduce((n, x) => n + x.framesDecoded, 0);
};

/**
 * Waits until `page` decodes `more` video frames from `identity` than when called. A
 * receiver renegotiated on the way counts from 0 again, so progress is counted from
 * the lowest total seen; on timeout the totals seen say which happened.
 */
async function waitForNewFrames(page, identity, more, what) {
  const timeoutMs = 30_000;
  const deadline = Date.now() + timeoutMs;
  const seen = [];
  while (Date.now() < deadline) {
    seen.push(await page.evaluate(framesFrom, [`(${inboundSummary})`, identity]));
    if (seen.at(-1) - Math.min(...seen) > more) return;
    await page.waitForTimeout(200);
  }
  const series = seen.length > 12 ? [...seen.slice(0, 6), '…', ...seen.slice(-6)] : seen;
  const inbound = await page.evaluate(`(${inboundSummary})()`);
  const others = await page.evaluate(() => [.../** @type {any} */ (window).soukRoom.participants.values()].map((p) => `${p.identity}=${p.sid}`));
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; decoded totals seen: ${series.join(', ')}; `
    + `participants: ${others.join(' ')}; inbound: ${JSON.stringify(inbound)}`);
}

const consultUrl = async (room, identity, role) =>
  `${lab.server.url}/demo/consult.html?token=${await devToken(lab.server.url, { room, identity, role })}&simulcast=0&width=640&height=360`;

test('a participant leaves and rejoins, and video flows again both ways', async () => {
  const room = 'rejoin-e2e';
  const staff = await openPage(lab.browser, await consultUrl(room, 'staff', 'staff'));
  const shopper = await openPage(lab.browser, await consultUrl(room, 'shopper', 'shopper'));
  await waitInPage(staff, framesFrom, { arg: [`(${inboundSummary})`, 'shopper'], what: 'staff to see the shopper' });

  await shopper.evaluate(() => /** @type {any} */ (window).soukRoom.leave());
  await waitInPage(staff, () => {
    const room = /** @type {any} */ (window).soukRoom;
    return ![...room.participants.values()].some((p) => p.identity === 'shopper');
  }, { what: 'staff to see the shopper leave' });
  assert.equal(await shopper.evaluate(() => document.body.dataset.state), 'disconnected');

  await shopper.goto(await consultUrl(room, 'shopper', 'shopper'));
  await waitInPage(staff, framesFrom, { arg: [`(${inboundSummary})`, 'shopper'], what: 'staff to see the rejoined shopper' });
  await waitInPage(shopper, framesFrom, { arg: [`(${inboundSummary})`, 'staff'], what: 'the rejoined shopper to see staff' });
});

test('after the WebSocket is cut the page resumes as the same participant', async () => {
  const room = 'resume-e2e';
  const staff = await openPage(lab.browser, await consultUrl(room, 'staff', 'staff'));
  const shopper = await openPage(lab.browser, await consultUrl(room, 'shopper', 'shopper'));
  await waitInPage(staff, framesFrom, { arg: [`(${inboundSummary})`, 'shopper'], what: 'staff to see the shopper' });
  // Media flows both ways before the cut, so what is checked after it is that it goes on.
  await waitInPage(shopper, framesFrom, { arg: [`(${inboundSummary})`, 'staff'], what: 'the shopper to see staff' });
  const sidBefore = await shopper.evaluate(() => /** @type {any} */ (window).soukRoom.localParticipant.sid);
  const leftEvents = [];
  await staff.exposeFunction('recordLeft', (identity) => leftEvents.push(identity));
  await staff.evaluate(() => /** @type {any} */ (window).soukRoom.on('participant_left', (p) => /** @type {any} */ (window).recordLeft(p.identity)));

  // Cut the signalling socket; the SDK must resume within the window.
  await shopper.evaluate(() => /** @type {any} */ (window).soukRoom.ws.close());
  await waitInPage(shopper, () => /** @type {any} */ (window).soukRoom.state === 'resumed', { what: 'the shopper to resume' });
  const sidAfter = await shopper.evaluate(() => /** @type {any} */ (window).soukRoom.localParticipant.sid);
  assert.equal(sidAfter, sidBefore, 'same participant after resume');

  // Media keeps flowing both ways after the ICE restart.
  await waitForNewFrames(staff, 'shopper', 30, 'staff to keep decoding the shopper');
  await waitForNewFrames(shopper, 'staff', 30, 'the shopper to keep decoding staff');
  assert.deepEqual(leftEvents, [], 'nobody saw the shopper leave');
});

/**
 * In-page, before the SDK loads: closes the signalling socket once, right after the
 * first subscriber offer arrives (`offer`) or right after its answer is sent (`answer`).
 */
const cutAt = (moment) => `
  const Socket = window.WebSocket;
  let cut = false;
  window.WebSocket = class extends Socket {
    constructor(...args) {
      super(...args);
      const send = this.send.bind(this);
      this.send = (data) => {
        send(data);
        if (${JSON.stringify(moment)} === 'answer' && !cut && String(data).includes('"subscriber_answer"')) { cut = true; this.close(); }
      };
      this.addEventListener('message', (e) => {
        if (${JSON.stringify(moment)} === 'offer' && !cut && String(e.data).includes('"subscriber_offer"')) { cut = true; this.close(); }
      });
    }
  };`;

for (const moment of ['offer', 'answer']) {
  test(`a socket cut right after the first subscriber ${moment} resumes, and the video arrives`, async () => {
    const room = `cut-at-${moment}`;
    const staff = await openPage(lab.browser, await consultUrl(room, 'staff', 'staff'));
    await waitInPage(staff, () => /** @type {any} */ (window).soukRoom?.state === 'connected', { what: 'staff to connect' });
    const shopper = await openPage(lab.browser, await consultUrl(room, 'shopper', 'shopper'), { initScript: cutAt(moment) });
    await waitInPage(shopper, () => /** @type {any} */ (window).soukRoom?.state === 'resumed', { what: 'the shopper to resume' });
    await waitForNewFrames(shopper, 'staff', 30, 'the shopper to decode staff');
  });
}
