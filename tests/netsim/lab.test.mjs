// The weak-network lab in CI: a short subset of profiles, with floors that catch a
// regression (audio without redundancy, video that does not adapt to a capped link)
// without flaking on a busy machine. The full table is in bench/RESULTS.md.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');

/** Runs `tools/netsim/lab` and returns its summary. */
function lab(profile, seconds = 20) {
  const out = execFileSync(path.join(root, 'tools/netsim/lab'), ['--profile', profile, '--seconds', String(seconds)], {
    env: {
      ...process.env,
      SOUK_BIN: process.env.SOUK_BIN ?? path.join(root, 'target/debug/souk'),
      NETSIM_QUEUE_BIN: process.env.NETSIM_QUEUE_BIN ?? path.join(root, 'target/debug/netsim-queue'),
    },
    timeout: 180_000,
  });
  const summary = JSON.parse(out.toString().trim().split('\n').pop());
  console.log(JSON.stringify(summary));
  return summary;
}

test('clean: smooth video and audio', () => {
  const s = lab('clean');
  assert.ok(s.fps >= 10, `fps ${s.fps}`);
  assert.ok(s.freeze_rate <= 0.1, `freeze rate ${s.freeze_rate}`);
  assert.ok(s.audio_concealed_ratio <= 0.05, `audio concealed ${s.audio_concealed_ratio}`);
});

// Video under 20% random loss is a known gap (bench/RESULTS.md): the send-side estimator
// reads random loss as congestion and starves the video, so only audio has a floor here.
test('lossy-20: redundant audio stays clear', () => {
  const s = lab('lossy-20');
  assert.ok(s.audio_concealed_ratio <= 0.08, `audio concealed ${s.audio_concealed_ratio}`);
});

test('cap-300k: video drops to the lowest layer and keeps playing, audio unaffected', () => {
  const s = lab('cap-300k');
  assert.ok(s.widths_seen.some((w) => w <= 320), `widths ${s.widths_seen}`);
  assert.ok(s.fps >= 10, `fps ${s.fps}`);
  assert.ok(s.freeze_rate <= 0.3, `freeze rate ${s.freeze_rate}`);
  assert.ok(s.audio_concealed_ratio <= 0.05, `audio concealed ${s.audio_concealed_ratio}`);
});
