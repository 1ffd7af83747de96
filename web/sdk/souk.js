// Souk browser SDK: join a room, publish camera and microphone, receive others.
//
// Plain ES module with JSDoc types (checked by `tsc --checkJs`). The wire protocol is
// docs/PROTOCOL.md: one WebSocket for signalling and two peer connections, a publisher
// (we offer) and a subscriber (the server offers), so offers never collide.

export const PROTOCOL_VERSION = 1;

/**
 * @typedef {'audio' | 'video'} TrackKind
 * @typedef {{ rid: string, width: number, height: number }} LayerInfo
 * @typedef {{ track_id: string, kind: TrackKind, source: string, name: string, muted: boolean,
 *   width: number, height: number, layers: LayerInfo[], codec?: string }} TrackInfo
 * @typedef {{ sid: string, identity: string, name: string, role: string, metadata?: string,
 *   grants: { publish: boolean, subscribe: boolean, data: boolean }, tracks: TrackInfo[],
 *   joined_at_ms: number }} ParticipantInfo
 * @typedef {{ name: string, sid: string, created_at_ms: number, num_participants: number }} RoomInfo
 * @typedef {{ [key: string]: any, type: string }} Message
 */

/**
 * @typedef {object} ConnectOptions
 * @property {boolean} [autoSubscribe] Receive every track as it appears (default true).
 * @property {boolean} [adaptiveStream] Ask for the simulcast layer that fits each attached
 *   video element, and pause videos that are not visible (default true).
 * @property {number} [resumeWindowMs] Give up resuming after this long (default: the server's window).
 */

/**
 * @typedef {object} PublishOptions
 * @property {boolean} [audio] Publish the microphone (default true).
 * @property {boolean} [video] Publish the camera (default true).
 * @property {boolean} [simulcast] Send three layers of video (default true).
 * @property {number} [width] Camera width to ask for (default 1280).
 * @property {number} [height] Camera height to ask for (default 720).
 * @property {MediaStream} [stream] Publish this stream instead of opening devices.
 * @property {'vp8' | 'h264'} [videoCodec] Codec to prefer for video (default: the browser's
 *   choice, VP8 in Chromium). H.264 suits Safari-heavy audiences and hardware encoders.
 */

/** A remote track as this client receives it. */
export class RemoteTrack {
  /**
   * @param {TrackInfo} info
   * @param {RemoteParticipant} participant
   */
  constructor(info, participant) {
    this.info = info;
    this.participant = participant;
    /** @type {MediaStreamTrack | null} */
    this.mediaTrack = null;
    /** @type {string | null} */
    this.mid = null;
  }
  get id() { return this.info.track_id; }
  get kind() { return this.info.kind; }
}

/** Someone else in the room. */
export class RemoteParticipant {
  /** @param {ParticipantInfo} info */
  constructor(info) {
    this.info = info;
    /** @type {Map<string, RemoteTrack>} */
    this.tracks = new Map();
    for (const t of info.tracks) this.tracks.set(t.track_id, new RemoteTrack(t, this));
  }
  get sid() { return this.info.sid; }
  get identity() { return this.info.identity; }
  get name() { return this.info.name || this.info.identity; }
}

/** A failure the server reported, with its stable code. */
export class SoukError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   */
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
  }
}

/**
 * Moves `codec` to the front of a video transceiver's preferences.
 * @param {RTCRtpTransceiver} transceiver
 * @param {string} codec
 */
function preferCodec(transceiver, codec) {
  const caps = RTCRtpSender.getCapabilities('video') ?? RTCRtpReceiver.getCapabilities('video');
  if (!caps) return;
  const wanted = `video/${codec}`.toLowerCase();
  const first = caps.codecs.filter((c) => c.mimeType.toLowerCase() === wanted);
  if (first.length === 0) throw new SoukError('codec_unsupported', `this browser cannot send ${codec}`);
  transceiver.setCodecPreferences([...first, ...caps.codecs.filter((c) => c.mimeType.toLowerCase() !== wanted)]);
}

const SIMULCAST_LAYERS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];

/**
 * A connection to one room. Create it, attach handlers with `on`, then `connect`:
 * tracks may arrive the moment the room is joined, so handlers must be in place first.
 *
 * Events: `participant_joined`, `participant_left`,
 * `track_subscribed`, `track_unsubscribed`, `track_muted`, `active_speakers`,
 * `stream_state` (a video held back, or resumed, for lack of bandwidth),
 * `connection_quality` ('excellent' | 'good' | 'poor', with MOS, RTT, jitter and loss),
 * `connection_state` ('connected' | 'reconnecting' | 'resumed' | 'disconnected'),
 * `audio_blocked`, `error`, `left`.
 *
 * Live rooms add `room_event` (every numbered event: comments, gifts, likes, stage,
 * products, sales...) and `permissions_changed` (this participant may now publish, or no
 * longer). `room.live` holds the room's live state as of the last event.
 */
export class Room {
  /** @param {ConnectOptions} [options] */
  constructor(options = {}) {
    this.url = '';
    this.token = '';
    this.options = { autoSubscribe: true, adaptiveStream: true, ...options };
    /** @type {WebSocket | null} */
    this.ws = null;
    /** @type {RoomInfo | null} */
    this.room = null;
    /** @type {ParticipantInfo | null} */
    this.localParticipant = null;
    /** @type {Map<string, RemoteParticipant>} */
    this.participants = new Map();
    /** @type {RTCPeerConnection | null} */
    this.publisher = null;
    /** @type {RTCPeerConnection | null} */
    this.subscriber = null;
    /** @type {Map<string, {track_id: string, participant_sid: string}>} mid -> track */
    this.subscribedMids = new Map();
    /** @type {Map<string, {sender: RTCRtpSender, info: TrackInfo}>} own track id -> sender */
    this.published = new Map();
    /** @type {Map<string, Set<(data: any) => void>>} */
    this.handlers = new Map();
    /** @type {Map<number, {resolve: (m: Message) => void, reject: (e: Error) => void}>} */
    this.pending = new Map();
    this.nextReq = 1;
    /** @type {string} */
    this.state = 'connecting';
    this.resumeSecret = '';
    this.resumeWindowMs = 15000;
    /** Serialises negotiations on each connection. @type {Promise<unknown>} */
    this.pubQueue = Promise.resolve();
    /** @type {Promise<unknown>} */
    this.subQueue = Promise.resolve();
    /** @type {Set<HTMLMediaElement>} */
    this.audioElements = new Set();
    /** @type {Map<string, ResizeObserver>} */
    this.observers = new Map();
    this.closedByUs = false;
    /** @type {MediaStream | null} */
    this.localStream = null;
    /** Live-room state: where the event stream stands, the stage, the pinned product. @type {any} */
    this.live = null;
  }

  /**
   * Joins the room the token admits to. Resolves once joined.
   * @param {string} url Base URL of the server, e.g. `https://souk.example.com` (ws URLs work too).
   * @param {string} token Access token from your backend.
   * @returns {Promise<Room>}
   */
  async connect(url, token) {
    this.url = url;
    this.token = token;
    await this.open(false);
    return this;
  }

  /**
   * @param {string} event
   * @param {(data: any) => void} handler
   */
  on(event, handler) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event)?.add(handler);
    return this;
  }

  /**
   * @param {string} event
   * @param {(data: any) => void} handler
   */
  off(event, handler) {
    this.handlers.get(event)?.delete(handler);
    return this;
  }

  /**
   * @param {string} event
   * @param {any} [data]
   */
  emit(event, data) {
    for (const h of this.handlers.get(event) ?? []) {
      try { h(data); } catch (e) { console.error(`souk: '${event}' handler failed`, e); }
    }
  }

  signalUrl() {
    const u = new URL(this.url, typeof location !== 'undefined' ? location.href : undefined);
    u.protocol = u.protocol === 'https:' || u.protocol === 'wss:' ? 'wss:' : 'ws:';
    u.pathname = '/rtc';
    u.search = '';
    return u.toString();
  }

  /**
   * Opens the socket and joins (or resumes).
   * @param {boolean} resume
   * @returns {Promise<void>}
   */
  open(resume) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.signalUrl());
      this.ws = ws;
      let settled = false;
      ws.onopen = () => {
        /** @type {Message} */
        const join = { type: 'join', protocol: PROTOCOL_VERSION, token: this.token, auto_subscribe: this.options.autoSubscribe };
        if (resume && this.localParticipant) {
          join.resume = { sid: this.localParticipant.sid, resume_secret: this.resumeSecret };
        }
        if (this.live) join.last_event = { epoch: this.live.epoch, seq: this.live.seq };
        ws.send(JSON.stringify(join));
      };
      ws.onmessage = (ev) => {
        /** @type {Message} */
        let msg;
        try { msg = JSON.parse(ev.data); } catch { return; }
        if (!settled && (msg.type === 'joined' || msg.type === 'resumed')) {
          settled = true;
          this.onJoined(msg, resume);
          resolve();
          return;
        }
        if (!settled && msg.type === 'error') {
          settled = true;
          reject(new SoukError(msg.code, msg.message));
          return;
        }
        this.handle(msg);
      };
      ws.onclose = () => {
        if (!settled) {
          settled = true;
          reject(new SoukError('connection_failed', 'the signalling connection closed before joining'));
          return;
        }
        if (this.ws === ws) this.onSocketLost();
      };
    });
  }

  /**
   * @param {Message} msg
   * @param {boolean} resumed
   */
  onJoined(msg, resumed) {
    this.room = msg.room;
    this.localParticipant = msg.participant;
    this.resumeSecret = msg.resume_secret;
    this.resumeWindowMs = this.options.resumeWindowMs ?? msg.resume_window_ms;
    const seen = new Set();
    for (const info of msg.others) {
      seen.add(info.sid);
      if (!this.participants.has(info.sid)) {
        this.participants.set(info.sid, new RemoteParticipant(info));
        if (resumed) this.emit('participant_joined', this.participants.get(info.sid));
      }
    }
    for (const [sid, p] of this.participants) {
      if (!seen.has(sid)) {
        this.participants.delete(sid);
        this.emit('participant_left', p);
      }
    }
    const live = msg.live ?? {};
    const missed = live.reload || !this.live ? [] : live.missed ?? [];
    this.live = { ...live, missed: undefined };
    for (const e of missed) this.applyRoomEvent(e);
    this.setState(resumed ? 'resumed' : 'connected');
    if (resumed) this.restartIce();
  }

  /** @param {Message} e a `room_event` */
  applyRoomEvent(e) {
    const live = this.live;
    if (live) {
      if (e.epoch === live.epoch && e.seq <= live.seq) return;
      live.epoch = e.epoch;
      live.seq = e.seq;
      const ev = e.event;
      if (ev.kind === 'stage') live.stage = { ...ev, kind: undefined };
      if (ev.kind === 'product_pinned') live.pinned = { ...ev, kind: undefined };
      if (ev.kind === 'product_unpinned') live.pinned = null;
      if (ev.kind === 'likes') live.likes_total = ev.total;
      if (ev.kind === 'viewers') live.viewers = ev.count;
      if (ev.kind === 'slow_mode') live.slow_mode_s = ev.seconds;
    }
    this.emit('room_event', e);
  }

  /** @param {string} state */
  setState(state) {
    this.state = state;
    this.emit('connection_state', state);
  }

  /**
   * Sends a request and waits for the answer carrying the same `req`.
   * @param {Message} msg
   * @returns {Promise<Message>}
   */
  request(msg) {
    const req = this.nextReq++;
    return new Promise((resolve, reject) => {
      this.pending.set(req, { resolve, reject });
      this.send({ ...msg, req });
    });
  }

  /** @param {Message} msg */
  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  /** @param {Message} msg */
  handle(msg) {
    if (msg.req && this.pending.has(msg.req)) {
      const p = this.pending.get(msg.req);
      this.pending.delete(msg.req);
      if (msg.type === 'error') p?.reject(new SoukError(msg.code, msg.message));
      else p?.resolve(msg);
      return;
    }
    switch (msg.type) {
      case 'subscriber_offer':
        this.subQueue = this.subQueue.then(() => this.answerSubscriber(msg)).catch((e) => this.emit('error', e));
        break;
      case 'participant_joined': {
        const p = new RemoteParticipant(msg.participant);
        this.participants.set(p.sid, p);
        this.emit('participant_joined', p);
        break;
      }
      case 'participant_updated': {
        const p = this.participants.get(msg.participant.sid);
        if (p) p.info = msg.participant;
        const me = this.localParticipant;
        if (me && msg.participant.sid === me.sid) {
          const changed = me.grants.publish !== msg.participant.grants.publish;
          this.localParticipant = msg.participant;
          if (changed) this.emit('permissions_changed', msg.participant.grants);
        }
        break;
      }
      case 'room_events':
        for (const e of msg.events) this.applyRoomEvent(e);
        break;
      case 'participant_left': {
        const p = this.participants.get(msg.sid);
        if (p) {
          this.participants.delete(msg.sid);
          this.emit('participant_left', p);
        }
        break;
      }
      case 'track_published': {
        const p = this.participants.get(msg.participant_sid);
        if (p && !p.tracks.has(msg.track.track_id)) p.tracks.set(msg.track.track_id, new RemoteTrack(msg.track, p));
        this.emit('track_published', { participant: p, track: p?.tracks.get(msg.track.track_id) });
        break;
      }
      case 'track_unpublished': {
        const p = this.participants.get(msg.participant_sid);
        const t = p?.tracks.get(msg.track_id);
        if (p && t) {
          p.tracks.delete(msg.track_id);
          if (t.mediaTrack) this.emit('track_unsubscribed', { participant: p, track: t });
        }
        break;
      }
      case 'track_muted': {
        const own = this.published.get(msg.track_id);
        if (own) {
          own.info.muted = msg.muted;
          if (own.sender.track) own.sender.track.enabled = !msg.muted;
        }
        const t = this.participants.get(msg.participant_sid)?.tracks.get(msg.track_id);
        if (t) t.info.muted = msg.muted;
        this.emit('track_muted', { participantSid: msg.participant_sid, trackId: msg.track_id, muted: msg.muted, own: !!own });
        break;
      }
      case 'active_speakers':
        this.emit('active_speakers', msg.speakers);
        break;
      case 'stream_state':
        this.emit('stream_state', { trackId: msg.track_id, paused: msg.paused });
        break;
      case 'connection_quality':
        this.emit('connection_quality', { quality: msg.quality, mos: msg.mos, rttMs: msg.rtt_ms, jitterMs: msg.jitter_ms, loss: msg.loss });
        break;
      case 'refresh_token':
        this.token = msg.token;
        break;
      case 'leave':
        this.closedByUs = true;
        this.teardown();
        this.emit('left', { reason: msg.reason, message: msg.message });
        this.setState('disconnected');
        break;
      case 'error':
        this.emit('error', new SoukError(msg.code, msg.message));
        break;
      default:
        break;
    }
  }

  /** The socket dropped: resume within the window, keeping our tracks. */
  async onSocketLost() {
    if (this.closedByUs) return;
    this.setState('reconnecting');
    const deadline = Date.now() + this.resumeWindowMs;
    let delay = 300;
    while (Date.now() < deadline && !this.closedByUs) {
      try {
        await this.open(true);
        return;
      } catch (e) {
        if (e instanceof SoukError && e.code === 'session_not_found') break;
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 2000);
    }
    this.teardown();
    this.setState('disconnected');
  }

  /** New ICE credentials on both connections, after a network change or resume. */
  restartIce() {
    if (this.publisher) {
      this.pubQueue = this.pubQueue.then(() => this.negotiatePublisher([], true)).catch((e) => this.emit('error', e));
    }
    if (this.subscriber) this.send({ type: 'ice_restart' });
  }

  /**
   * @param {RTCPeerConnection} pc
   */
  watchIce(pc) {
    pc.addEventListener('iceconnectionstatechange', () => {
      if (pc.iceConnectionState === 'failed' && this.state !== 'disconnected') this.restartIce();
    });
  }

  /**
   * Publishes camera and microphone (or a given stream).
   * @param {PublishOptions} [opts]
   * @returns {Promise<TrackInfo[]>}
   */
  async publish(opts = {}) {
    const o = { audio: true, video: true, simulcast: true, width: 1280, height: 720, ...opts };
    const stream = o.stream ?? await navigator.mediaDevices.getUserMedia({
      audio: o.audio,
      video: o.video ? { width: { ideal: o.width }, height: { ideal: o.height } } : false,
    });
    const pc = this.ensurePublisher();
    /** @type {{ transceiver: RTCRtpTransceiver, track: MediaStreamTrack, layers: LayerInfo[], width: number, height: number }[]} */
    const added = [];
    for (const track of stream.getTracks()) {
      const s = track.getSettings();
      const width = s.width ?? 0;
      const height = s.height ?? 0;
      const simulcast = track.kind === 'video' && o.simulcast;
      /** @type {RTCRtpTransceiverInit} */
      const init = { direction: 'sendonly', streams: [stream] };
      if (simulcast) init.sendEncodings = SIMULCAST_LAYERS.map((l) => ({ ...l }));
      const transceiver = pc.addTransceiver(track, init);
      if (track.kind === 'video' && o.videoCodec) preferCodec(transceiver, o.videoCodec);
      const layers = simulcast
        ? SIMULCAST_LAYERS.map((l) => ({ rid: l.rid, width: Math.round(width / l.scaleResolutionDownBy), height: Math.round(height / l.scaleResolutionDownBy) }))
        : [];
      added.push({ transceiver, track, layers, width, height });
    }
    /** @type {{ mid: string, track: TrackInfo }[]} */
    let infos = [];
    const run = async () => {
      infos = await this.negotiatePublisher(added.map((a) => ({
        get mid() { return a.transceiver.mid; },
        kind: a.track.kind,
        source: a.track.kind === 'audio' ? 'microphone' : 'camera',
        name: a.track.label,
        width: a.width,
        height: a.height,
        layers: a.layers,
      })), false);
      for (const a of added) {
        const info = infos.find((i) => i.mid === a.transceiver.mid);
        if (info) this.published.set(info.track.track_id, { sender: a.transceiver.sender, info: info.track });
      }
    };
    this.pubQueue = this.pubQueue.then(run);
    await this.pubQueue;
    this.localStream = stream;
    return [...this.published.values()].map((p) => p.info);
  }

  ensurePublisher() {
    if (!this.publisher) {
      this.publisher = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
      this.watchIce(this.publisher);
    }
    return this.publisher;
  }

  /**
   * One offer/answer round on the publisher connection.
   * @param {{mid: string | null, kind: string, source: string, name: string, width: number, height: number, layers: LayerInfo[]}[]} tracks
   * @param {boolean} iceRestart
   * @returns {Promise<{ mid: string, track: TrackInfo }[]>}
   */
  async negotiatePublisher(tracks, iceRestart) {
    const pc = this.ensurePublisher();
    const offer = await pc.createOffer({ iceRestart });
    await pc.setLocalDescription(offer);
    const announced = tracks.map((t) => ({ ...t, mid: t.mid }));
    const answer = await this.request({ type: 'publish_offer', sdp: offer.sdp, tracks: announced });
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    return answer.tracks;
  }

  /**
   * @param {Message} msg
   */
  async answerSubscriber(msg) {
    if (!this.subscriber) {
      this.subscriber = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
      this.watchIce(this.subscriber);
      this.subscriber.ontrack = (ev) => this.onRemoteTrack(ev);
    }
    const previous = new Map(this.subscribedMids);
    this.subscribedMids.clear();
    for (const t of msg.tracks) this.subscribedMids.set(t.mid, { track_id: t.track_id, participant_sid: t.participant_sid });
    await this.subscriber.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
    const answer = await this.subscriber.createAnswer();
    await this.subscriber.setLocalDescription(answer);
    this.send({ type: 'subscriber_answer', sdp: answer.sdp });
    for (const [mid, t] of previous) {
      if (!this.subscribedMids.has(mid)) {
        const p = this.participants.get(t.participant_sid);
        const track = p?.tracks.get(t.track_id);
        if (track) {
          track.mediaTrack = null;
          this.emit('track_unsubscribed', { participant: p, track });
        }
      }
    }
  }

  /** @param {RTCTrackEvent} ev */
  onRemoteTrack(ev) {
    const mid = ev.transceiver.mid;
    const entry = mid ? this.subscribedMids.get(mid) : undefined;
    if (!entry) return;
    const participant = this.participants.get(entry.participant_sid);
    const track = participant?.tracks.get(entry.track_id);
    if (!participant || !track) return;
    track.mediaTrack = ev.track;
    track.mid = mid;
    this.emit('track_subscribed', { participant, track, mediaTrack: ev.track });
  }

  /**
   * Shows a remote track in an element (created when not given). Videos get the
   * simulcast layer that fits the element; audio plays, or `audio_blocked` fires.
   * @param {RemoteTrack} track
   * @param {HTMLMediaElement} [element]
   * @returns {HTMLMediaElement}
   */
  attach(track, element) {
    const el = element ?? document.createElement(track.kind === 'video' ? 'video' : 'audio');
    if (!track.mediaTrack) return el;
    el.srcObject = new MediaStream([track.mediaTrack]);
    el.autoplay = true;
    if (el instanceof HTMLVideoElement) {
      el.playsInline = true;
      el.muted = true;
      if (this.options.adaptiveStream) this.observeSize(track, el);
    } else {
      this.audioElements.add(el);
      el.play().catch(() => this.emit('audio_blocked'));
    }
    return el;
  }

  /**
   * Keeps the server told how large (and whether visible) a video is shown.
   * @param {RemoteTrack} track
   * @param {HTMLVideoElement} el
   */
  observeSize(track, el) {
    this.observers.get(track.id)?.disconnect();
    let timer = 0;
    const report = () => {
      const dpr = window.devicePixelRatio || 1;
      const width = Math.round(el.clientWidth * dpr);
      const height = Math.round(el.clientHeight * dpr);
      this.setTrackSettings(track.id, { width, height, paused: width === 0 || height === 0 });
    };
    const ro = new ResizeObserver(() => {
      clearTimeout(timer);
      timer = window.setTimeout(report, 100);
    });
    ro.observe(el);
    this.observers.set(track.id, ro);
    report();
  }

  /**
   * Tells the server how a video is shown, or picks a quality by hand.
   * @param {string} trackId
   * @param {{ width?: number, height?: number, quality?: 'low' | 'medium' | 'high', paused?: boolean }} settings
   */
  setTrackSettings(trackId, settings) {
    this.send({ type: 'track_settings', track_id: trackId, width: settings.width ?? 0, height: settings.height ?? 0, quality: settings.quality, paused: settings.paused ?? false });
  }

  /** Plays every remote audio element; call from a click after `audio_blocked`. */
  async startAudio() {
    await Promise.all([...this.audioElements].map((el) => el.play().catch(() => undefined)));
  }

  /**
   * @param {string} trackId One of our own tracks.
   * @param {boolean} muted
   */
  async setMuted(trackId, muted) {
    const own = this.published.get(trackId);
    if (own?.sender.track) own.sender.track.enabled = !muted;
    await this.request({ type: 'mute', track_id: trackId, muted });
  }

  /**
   * Stops publishing one of our tracks.
   * @param {string} trackId
   */
  async unpublish(trackId) {
    const own = this.published.get(trackId);
    if (!own) return;
    this.published.delete(trackId);
    await this.request({ type: 'unpublish', track_id: trackId });
    own.sender.track?.stop();
    const pc = this.publisher;
    if (pc) {
      pc.removeTrack(own.sender);
      this.pubQueue = this.pubQueue.then(() => this.negotiatePublisher([], false));
      await this.pubQueue;
    }
  }

  /**
   * Subscribes to (or, with `false`, unsubscribes from) tracks by id.
   * @param {string[]} trackIds
   * @param {boolean} [subscribe]
   */
  async subscribe(trackIds, subscribe = true) {
    await this.request({ type: 'subscribe', track_ids: trackIds, subscribe });
  }

  /**
   * A summary of `getStats()` for both connections.
   * @returns {Promise<{ inbound: any[], outbound: any[], rttMs: number | null }>}
   */
  async getStats() {
    /** @type {any[]} */
    const inbound = [];
    /** @type {any[]} */
    const outbound = [];
    let rttMs = null;
    for (const pc of [this.subscriber, this.publisher]) {
      if (!pc) continue;
      const report = await pc.getStats();
      report.forEach((s) => {
        const codec = s.codecId ? report.get(s.codecId)?.mimeType : undefined;
        if (s.type === 'inbound-rtp') {
          const entry = this.subscribedMids.get(s.mid);
          inbound.push({ ...s, codec, trackId: entry?.track_id, participantSid: entry?.participant_sid });
        } else if (s.type === 'outbound-rtp') {
          outbound.push({ ...s, codec });
        } else if (s.type === 'candidate-pair' && s.nominated && s.currentRoundTripTime !== undefined) {
          rttMs = s.currentRoundTripTime * 1000;
        }
      });
    }
    return { inbound, outbound, rttMs };
  }

  // Live rooms. Each resolves with the server's `ack` result, or rejects with a SoukError.

  raiseHand() { return this.request({ type: 'raise_hand' }); }

  lowerHand() { return this.request({ type: 'lower_hand' }); }

  /** The host or a moderator answers a raised hand. @param {string} identity @param {boolean} approve */
  decideStage(identity, approve) { return this.request({ type: 'stage_decision', identity, approve }); }

  /** Takes a seat back (or, with one's own identity, leaves the stage). @param {string} identity */
  removeFromStage(identity) { return this.request({ type: 'stage_remove', identity }); }

  /** @param {string} text */
  async comment(text) { return (await this.request({ type: 'comment', text })).result; }

  /** Likes are batched by the server; nothing comes back. @param {number} [count] */
  like(count = 1) { this.send({ type: 'like', count }); }

  /**
   * Sends a gift, paid from this user's wallet. The idempotency key makes a retry safe.
   * @param {string} giftId @param {string} to the host or a co-host @param {number} [count]
   * @param {string} [idempotencyKey]
   */
  async sendGift(giftId, to, count = 1, idempotencyKey = crypto.randomUUID()) {
    return (await this.request({ type: 'send_gift', gift_id: giftId, to, count, idempotency_key: idempotencyKey })).result;
  }

  /** @param {string} couponId */
  async claimCoupon(couponId) { return (await this.request({ type: 'claim_coupon', coupon_id: couponId })).result; }

  /** @param {string} saleId @param {number} [quantity] @param {string} [idempotencyKey] */
  async buy(saleId, quantity = 1, idempotencyKey = crypto.randomUUID()) {
    return (await this.request({ type: 'buy', sale_id: saleId, quantity, idempotency_key: idempotencyKey })).result;
  }

  /** The host starts a flash sale. @param {Record<string, any>} sale */
  async startSale(sale) { return (await this.request({ type: 'start_sale', ...sale })).result; }

  /** @param {Record<string, any> | null} product */
  pinProduct(product) { return this.request(product ? { type: 'pin_product', product } : { type: 'pin_product' }); }

  /** @param {Record<string, any>} action e.g. `{action: 'mute', identity, seconds}` */
  moderate(action) { return this.request({ type: 'moderate', ...action }); }

  /** Leaves the room for good. */
  async leave() {
    this.closedByUs = true;
    this.send({ type: 'leave' });
    this.teardown();
    this.setState('disconnected');
  }

  teardown() {
    for (const ro of this.observers.values()) ro.disconnect();
    this.observers.clear();
    this.publisher?.close();
    this.subscriber?.close();
    this.publisher = null;
    this.subscriber = null;
    this.subscribedMids.clear();
    for (const { sender } of this.published.values()) sender.track?.stop();
    this.published.clear();
    const ws = this.ws;
    this.ws = null;
    ws?.close();
    for (const [, p] of this.pending) p.reject(new SoukError('disconnected', 'left the room'));
    this.pending.clear();
  }
}
