// ICE-TCP fallback: a browser that may not use UDP still joins, over TCP on the media port.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { devToken, openPage, waitInPage, inboundSummary, useLab } from './harness.mjs';

const lab = useLab({
  udpBrowser: {},
  // As on a network that blocks UDP: Chromium gathers no UDP candidates at all.
  tcpBrowser: { args: ['--webrtc-ip-handling-policy=disable_non_proxied_udp', '--force-webrtc-ip-handling-policy'] },
}, [
  // The server closes ICE-TCP connections that pass no ICE check within this; the
  // browser's connections pass theirs, so video must go on past it.
  '--ice-tcp-check-within', '1s',
]);

/** In-page: transport protocols of the selected candidate pairs of both connections. */
const selectedProtocols = async () => {
  const room = /** @type {any} */ (window).soukRoom;
  const protocols = [];
  for (const pc of [room.publisher, room.subscriber]) {
    if (!pc) continue;
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) {
        const pair = report.get(s.selectedCandidatePairId);
        protocols.push(report.get(pair.localCandidateId).protocol);
      }
    });
  }
  return protocols;
};

test('a participant without UDP exchanges media over ICE-TCP', async () => {
  const room = 'ice-tcp-e2e';
  const url = async (identity) => `${lab.server.url}/demo/consult.html?token=${await devToken(lab.server.url, { room, identity, role: 'staff' })}&simulcast=0&width=640&height=360`;
  const onUdp = await openPage(lab.udpBrowser, await url('on-udp'));
  const onTcp = await openPage(lab.tcpBrowser, await url('on-tcp'));
  for (const [name, page] of [['the TCP-only page', onTcp], ['the UDP page', onUdp]]) {
    await waitInPage(page, async (summary) => {
      const s = await eval(summary)();
      return (s ?? []).some((x) => x.kind === 'video' && x.framesDecoded > 10);
    }, { arg: `(${inboundSummary})`, what: `${name} to decode video` });
  }
  assert.deepEqual(await onTcp.evaluate(selectedProtocols), ['tcp', 'tcp'], 'both connections of the TCP-only page run over TCP');
  // Two more seconds of video at 30 frames a second: past the server's check limit.
  const decodedVideo = async (summary) => ((await eval(summary)()) ?? []).find((x) => x.kind === 'video')?.framesDecoded ?? 0;
  const decodedSoFar = await onTcp.evaluate(decodedVideo, `(${inboundSummary})`);
  await waitInPage(onTcp, async ([summary, floor]) => {
    const s = await eval(summary)();
    return (s ?? []).some((x) => x.kind === 'video' && x.framesDecoded > floor);
  }, { arg: [`(${inboundSummary})`, decodedSoFar + 60], what: 'the TCP-only page to go on decoding video' });
  assert.deepEqual(await onUdp.evaluate(selectedProtocols), ['udp', 'udp']);
});
