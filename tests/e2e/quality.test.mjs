// The connection-quality page: it shows each participant of a live consultation with
// its MOS, the bitrate it is sent and its video layer, and charts them over time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { devToken, openPage, waitInPage, useLab } from './harness.mjs';

const lab = useLab();

test('the quality page shows and charts every participant of a call', async () => {
  const room = 'quality-e2e';
  for (const identity of ['staff-q', 'shopper-q']) {
    await openPage(lab.browser, `${lab.server.url}/demo/consult.html?token=${await devToken(lab.server.url, { room, identity, role: 'staff' })}`);
  }
  const dashboard = await openPage(lab.browser, `${lab.server.url}/demo/quality.html?room=${room}`);

  // Both participants receive the other's camera: each row shows a grade, video flowing
  // to it and the (only) layer it gets.
  const rows = await waitInPage(dashboard, () => {
    const rows = [...document.querySelectorAll('#rows tr')].map((tr) => ({
      room: tr.querySelector('.room')?.textContent,
      mos: Number(tr.querySelector('.mos')?.textContent),
      kbps: Number(tr.querySelector('.kbps')?.textContent),
      copies: tr.querySelector('.copies')?.textContent,
      estimate: tr.querySelector('.estimate')?.textContent,
      layers: tr.querySelector('.layers')?.textContent,
    }));
    return rows.length === 2 && rows.every((r) => r.kbps > 100 && /^\d/.test(r.layers ?? '')) ? rows : null;
  }, { timeoutMs: 45_000, what: 'two participants with video flowing to them' });
  for (const row of rows) {
    assert.equal(row.room, room);
    assert.ok(row.mos >= 1 && row.mos <= 4.5, `MOS in range: ${row.mos}`);
    assert.equal(row.copies, '1', 'a loopback link loses nothing: no video copies');
    assert.match(row.estimate ?? '', /^(no limit|\d+)$/, 'the downlink estimate column');
  }

  // The charts gain a point per participant each second.
  const points = await waitInPage(dashboard, () => {
    const lines = [...document.querySelectorAll('#bitrate-chart polyline')];
    const counts = lines.map((l) => l.getAttribute('points').trim().split(' ').length);
    return lines.length === 2 && counts.every((n) => n >= 3) ? counts : null;
  }, { timeoutMs: 20_000, what: 'three samples per participant on the bitrate chart' });
  assert.equal(points.length, 2);
  assert.equal(await dashboard.locator('#mos-chart polyline').count(), 2);
});
