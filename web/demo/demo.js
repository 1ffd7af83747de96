// Helpers shared by the demo pages: where the token comes from, tiles, status.
import { Room } from '/sdk/souk.js';

/**
 * The page's token: `?token=` when given, else one from the dev-only endpoint for
 * `?room=&identity=&role=` (defaults shown).
 * @param {string} defaultRoom
 * @param {string} defaultRole
 */
export async function pageToken(defaultRoom, defaultRole) {
  const q = new URLSearchParams(location.search);
  const token = q.get('token');
  if (token) return token;
  const params = new URLSearchParams({
    room: q.get('room') ?? defaultRoom,
    identity: q.get('identity') ?? `guest-${Math.random().toString(36).slice(2, 8)}`,
    role: q.get('role') ?? defaultRole,
  });
  const resp = await fetch(`/dev/token?${params}`);
  if (!resp.ok) throw new Error('no ?token= in the URL, and the server is not in --dev mode');
  return (await resp.json()).token;
}

/**
 * A new element with a class and text.
 * @param {string} tag
 * @param {string} [cls]
 * @param {string} [text]
 */
export function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

/** @param {string} state */
export function showStatus(state) {
  const el = document.querySelector('header .status');
  if (el) {
    el.textContent = state;
    el.className = `status ${state}`;
  }
  document.body.dataset.state = state;
}

/**
 * A video tile with a name label.
 * @param {string} label
 * @param {string} [extraClass]
 */
export function makeTile(label, extraClass = '') {
  const tile = document.createElement('div');
  tile.className = `tile ${extraClass}`.trim();
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.muted = true;
  const name = document.createElement('span');
  name.className = 'label';
  name.textContent = label;
  tile.append(video, name);
  return { tile, video };
}

/**
 * Joins with the page's token and publishes camera and microphone, no click needed
 * (unless `?audio=0` / `?video=0` say otherwise).
 * `setup` attaches the page's handlers before joining, so no early track is missed.
 * @param {{ defaultRoom: string, defaultRole: string, simulcast?: boolean, setup: (room: Room) => void }} opts
 */
export async function joinAndPublish(opts) {
  showStatus('connecting');
  const token = await pageToken(opts.defaultRoom, opts.defaultRole);
  const q = new URLSearchParams(location.search);
  const room = new Room();
  opts.setup(room);
  room.on('connection_state', showStatus);
  room.on('connection_quality', ({ quality, mos }) => {
    const el = document.querySelector('header .quality');
    if (el) {
      el.textContent = `connection: ${quality}`;
      el.title = `MOS ${mos}`;
      el.className = `quality ${quality}`;
    }
  });
  room.on('error', (e) => console.error(`souk: ${e.message ?? e}`));
  room.on('audio_blocked', () => document.querySelector('.notice.audio')?.classList.add('shown'));
  // Exposed for tests and for poking at from the console.
  Object.assign(window, { soukRoom: room });
  await room.connect(location.origin, token);
  showStatus('connected');
  const simulcast = q.has('simulcast') ? q.get('simulcast') !== '0' : (opts.simulcast ?? true);
  const width = Number(q.get('width') ?? 1280);
  const height = Number(q.get('height') ?? 720);
  const videoCodec = /** @type {'vp8' | 'h264' | undefined} */ (q.get('codec') ?? undefined);
  // `?audio=0&video=0` joins without camera and microphone, e.g. to just listen first.
  const audio = q.get('audio') !== '0';
  const video = q.get('video') !== '0';
  if (audio || video) await room.publish({ audio, video, simulcast, width, height, videoCodec });
  return room;
}

/**
 * The page's chat token: `?token=` when given, else one from the dev-only endpoint for
 * `identity` (reading the shops' inboxes when `shops` is given).
 * @param {string} identity
 * @param {string} [shops] comma-separated shop ids
 */
export async function chatToken(identity, shops) {
  const q = new URLSearchParams(location.search);
  if (q.get('token')) return q.get('token');
  const params = new URLSearchParams({ chat: '1', identity });
  if (shops) params.set('shops', shops);
  const resp = await fetch(`/dev/token?${params}`);
  if (!resp.ok) throw new Error('no ?token= in the URL, and the server is not in --dev mode');
  return (await resp.json()).token;
}

/**
 * Shows a chat error as `code: message` in `target`.
 * @param {HTMLElement} target @param {any} err
 */
export function showChatError(target, err) {
  target.textContent = err.code ? `${err.code}: ${err.message.replace(/^\S+: /, '')}` : String(err);
}

/**
 * Sends what is typed in a compose form as a text message to the conversation
 * `current()` returns, clearing the form; errors go to `onError`.
 * @param {HTMLFormElement} form @param {any} chat @param {() => string | null} current
 * @param {(err: any) => void} onError
 */
export function sendOnSubmit(form, chat, current, onError) {
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    const input = form.elements.namedItem('text');
    const text = input.value.trim();
    const conversation = current();
    if (!text || !conversation) return;
    input.value = '';
    try { await chat.sendText(conversation, text); onError(null); } catch (err) { onError(err); }
  };
}
