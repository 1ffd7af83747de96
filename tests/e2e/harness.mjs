// Shared by the browser tests: a real `souk serve --dev` on ephemeral ports, and Debian's
// Chromium driven by Playwright with fake camera and microphone.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before } from 'node:test';
import { chromium } from 'playwright-core';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');

export const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns',
];

/**
 * Writes 16-bit mono PCM as a WAV file, for Chromium's
 * `--use-file-for-fake-audio-capture` (which loops it as the microphone).
 * @param {string} file
 * @param {Buffer} pcm little-endian 16-bit samples
 * @param {number} rate samples a second
 */
export function writeWav(file, pcm, rate) {
  const header = Buffer.alloc(44);
  header.write('RIFF', 0); header.writeUInt32LE(36 + pcm.length, 4); header.write('WAVEfmt ', 8);
  header.writeUInt32LE(16, 16); header.writeUInt16LE(1, 20); header.writeUInt16LE(1, 22);
  header.writeUInt32LE(rate, 24); header.writeUInt32LE(rate * 2, 28); header.writeUInt16LE(2, 32); header.writeUInt16LE(16, 34);
  header.write('data', 36); header.writeUInt32LE(pcm.length, 40);
  writeFileSync(file, Buffer.concat([header, pcm]));
  return file;
}

/** Lets pages play audio without a click, unless a test checks that path. */
const AUTOPLAY = '--autoplay-policy=no-user-gesture-required';

/** The souk binary under test: $SOUK_BIN, else the debug build. */
export function soukBinary() {
  const bin = process.env.SOUK_BIN ?? path.join(root, 'target/debug/souk');
  if (!existsSync(bin)) throw new Error(`no souk binary at ${bin}; run cargo build first`);
  return bin;
}

/**
 * Starts `souk serve --dev` on free ports and waits for its "listening" line.
 * @param {string[]} [extraArgs]
 */
export async function startServer(extraArgs = []) {
  const { mkdtempSync, rmSync } = await import('node:fs');
  const os = await import('node:os');
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'souk-e2e-'));
  const proc = spawn(soukBinary(), ['serve', '--dev', '--bind', '127.0.0.1:0', '--media-port', '0', '--data-dir', dataDir, ...extraArgs], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.SOUK_LOG ?? 'warn' },
  });
  let log = '';
  proc.stderr.on('data', (d) => { log += d; });
  const url = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`souk did not start within 30 s:\n${out}\n${log}`)), 30_000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/souk listening http=(\S+) media=(\d+)/);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`souk exited with ${code}:\n${out}\n${log}`)); });
  });
  return {
    url,
    proc,
    log: () => log,
    async stop() {
      if (process.env.SOUK_LOG_FILE) (await import('node:fs')).appendFileSync(process.env.SOUK_LOG_FILE, log);
      if (proc.exitCode === null) {
        proc.kill('SIGINT');
        await Promise.race([once(proc, 'exit'), new Promise((r) => setTimeout(r, 8000))]);
        if (proc.exitCode === null) proc.kill('SIGKILL');
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * A development token from the running server.
 * @param {string} url
 * @param {{room: string, identity: string, role?: string}} claims
 */
export async function devToken(url, { room, identity, role = 'shopper' }) {
  const resp = await fetch(`${url}/dev/token?${new URLSearchParams({ room, identity, role })}`);
  if (!resp.ok) throw new Error(`dev token: ${resp.status} ${await resp.text()}`);
  return (await resp.json()).token;
}

/**
 * @param {string[]} [extraArgs]
 * @param {{ autoplay?: boolean }} [opts] `autoplay: false` keeps Chromium's default policy,
 *   under which audio needs a user gesture.
 */
export async function launchBrowser(extraArgs = [], { autoplay = true } = {}) {
  const args = [...CHROMIUM_ARGS, ...(autoplay ? [AUTOPLAY] : []), ...extraArgs];
  return chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args });
}

/**
 * Opens a page in its own context (its own profile, as a separate person would have).
 * @param {import('playwright-core').Browser} browser
 * @param {string} url
 * @param {{ initScript?: string | (() => void) }} [opts] code to run in every document before its own
 */
export async function openPage(browser, url, { initScript } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  if (initScript) await context.addInitScript(initScript);
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`[page error] ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') console.error(`[page console] ${m.text()}`); });
  await page.goto(url);
  return page;
}

/**
 * Polls `fn` in the page until it returns a truthy value, or fails after `timeoutMs`
 * with the last value seen.
 * @template T
 * @param {import('playwright-core').Page} page
 * @param {(arg: any) => T | Promise<T>} fn
 * @param {{ arg?: any, timeoutMs?: number, what?: string }} [opts]
 */
export async function waitInPage(page, fn, { arg, timeoutMs = 30_000, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await page.evaluate(fn, arg);
      if (last) return last;
    } catch (e) {
      last = String(e);
    }
    await page.waitForTimeout(200);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last value: ${JSON.stringify(last)}`);
}

/** In-page: inbound media summary from the SDK's stats helper. */
export const inboundSummary = async () => {
  const room = /** @type {any} */ (window).soukRoom;
  if (!room) return null;
  const { inbound } = await room.getStats();
  return inbound.map((s) => ({
    kind: s.kind, codec: s.codec, trackId: s.trackId, participantSid: s.participantSid,
    framesDecoded: s.framesDecoded ?? 0, frameWidth: s.frameWidth ?? 0,
    bytesReceived: s.bytesReceived ?? 0,
  }));
};

/**
 * A server that talks to a scripted model, and a browser, for one test file.
 * `makeModel()` returns an OpenAI-compatible endpoint (an `http.Server` starting to
 * listen on a local port); `config(port)` is the server's TOML pointing at it. The lab
 * has `model`, `server`, `browser` and `dir` once `before` has run.
 * @param {string} prefix @param {() => import('node:http').Server} makeModel
 * @param {(port: number) => string} config
 */
export function useModelLab(prefix, makeModel, config) {
  /** @type {any} */
  const lab = {};
  before(async () => {
    lab.model = makeModel();
    await once(lab.model, 'listening');
    lab.dir = mkdtempSync(path.join(os.tmpdir(), prefix));
    const file = path.join(lab.dir, 'souk.toml');
    writeFileSync(file, config(lab.model.address().port));
    lab.server = await startServer(['--config', file]);
    lab.browser = await launchBrowser();
  });
  after(async () => {
    await lab.browser?.close();
    await lab.server?.stop();
    lab.model?.close();
    rmSync(lab.dir, { recursive: true, force: true });
  });
  return lab;
}

/** Types `text` into a chat page's compose box and sends it. @param {import('playwright-core').Page} page @param {string} text */
export async function sendChat(page, text) {
  await page.fill('#compose input[name=text]', text);
  await page.press('#compose input[name=text]', 'Enter');
}

/**
 * Registers hooks that start one server and the named browsers before a test file's tests
 * and stop them after. Returns an object filled in by the time tests run.
 * @param {Record<string, { args?: string[], autoplay?: boolean }>} [browsers]
 * @param {string[]} [serverArgs] extra `souk serve` arguments
 * @returns {{ server: any } & Record<string, any>}
 */
export function useLab(browsers = { browser: {} }, serverArgs = []) {
  /** @type {any} */
  const lab = {};
  before(async () => {
    lab.server = await startServer(serverArgs);
    for (const [name, opts] of Object.entries(browsers)) lab[name] = await launchBrowser(opts.args ?? [], opts);
  });
  after(async () => {
    for (const name of Object.keys(browsers)) await lab[name]?.close();
    await lab.server?.stop();
  });
  return lab;
}
