// Souk chat SDK for browsers: durable, ordered conversations over the server's WebSocket.
//
//   const chat = new ChatClient();
//   chat.on('message', (conv, event) => render(conv, event));
//   await chat.connect('https://souk.example', token);
//   const dm = await chat.openDirect('shop:acme');
//   chat.sendText(dm.id, 'Do you have size 38?');
//
// Every event in a conversation has a sequence number. The client remembers the last one
// it holds per conversation and, after any disconnect, asks for what came after: nothing
// is missed and nothing is shown twice. Sends carry a client id, and unacknowledged sends
// are retried after reconnecting, so a message is never lost or doubled either.

const PROTOCOL = 1;

/**
 * @typedef {{ conversation: string, seq: number, kind: string, sender: string, body: any,
 *   target_seq?: number, state: string, client_msg_id?: string, created_at_ms: number }} ChatEvent
 * @typedef {{ id: string, kind: 'direct'|'group', title?: string,
 *   members: {member: string, role: string}[], last_seq: number }} ConversationInfo
 * @typedef {{ info: ConversationInfo, events: Map<number, ChatEvent>, unread: number,
 *   readSeq: number, receipts: Map<string, {delivered_seq: number, read_seq: number}>,
 *   pending: {clientMsgId: string, kind: string, body: any}[] }} Conversation
 * @typedef {{ code: string, message: string }} ChatErrorInfo
 */

/** An error the server answered with: a stable `code` and a message for people. */
export class ChatError extends Error {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
  }
}

/** Kinds that are messages (shown as bubbles); the rest change other events. */
export const MESSAGE_KINDS = ['text', 'product', 'order', 'image', 'system'];

export class ChatClient {
  constructor() {
    /** @type {Map<string, Conversation>} */
    this.conversations = new Map();
    /** @type {string} */
    this.identity = '';
    /** @type {string[]} */
    this.principals = [];
    /** @type {Map<string, string>} user -> online | away */
    this.presence = new Map();
    /** @type {Record<string, Function[]>} */
    this.handlers = {};
    /** @type {Map<number, {resolve: (m: any) => void, reject: (e: Error) => void}>} */
    this.pending = new Map();
    this.nextReq = 1;
    /** @type {WebSocket | null} */
    this.ws = null;
    this.url = '';
    this.token = '';
    /** Set by disconnect(): no automatic reconnect until connect() again. */
    this.stopped = false;
    this.retryMs = 500;
  }

  /**
   * Events: `state` (connecting | connected | offline), `synced`, `conversation` (conv),
   * `message` (conv, event) for new and changed messages, `receipt` (conv, member),
   * `typing` (conv, member), `presence` (user, status), `error` (ChatError).
   * @param {string} name @param {Function} fn
   */
  on(name, fn) {
    (this.handlers[name] ??= []).push(fn);
    return this;
  }

  /** @param {string} name @param {...any} args */
  emit(name, ...args) {
    for (const fn of this.handlers[name] ?? []) {
      try { fn(...args); } catch (e) { console.error(e); }
    }
  }

  /**
   * Connects (or reconnects after disconnect()) and catches up.
   * @param {string} [url] the server's base URL (default: this page's origin)
   * @param {string} [token] a chat token from your backend
   */
  async connect(url, token) {
    if (url !== undefined) this.url = url;
    if (token !== undefined) this.token = token;
    this.stopped = false;
    const base = (this.url || location.origin).replace(/^http/, 'ws').replace(/\/$/, '');
    this.emit('state', 'connecting');
    const ws = new WebSocket(`${base}/rtc`);
    this.ws = ws;
    const hello = await new Promise((resolve, reject) => {
      ws.onopen = () => ws.send(JSON.stringify({ type: 'chat_connect', protocol: PROTOCOL, token: this.token }));
      ws.onerror = () => reject(new ChatError('connect_failed', 'cannot reach the chat server'));
      ws.onmessage = (ev) => {
        const msg = JSON.parse(ev.data);
        if (msg.type === 'chat_connected') resolve(msg);
        else if (msg.type === 'error') reject(new ChatError(msg.code, msg.message));
      };
    }).catch((e) => { this.scheduleReconnect(); throw e; });
    this.identity = hello.identity;
    this.principals = hello.principals;
    for (const p of hello.presence) this.presence.set(p.user, p.status);
    ws.onmessage = (ev) => this.receive(JSON.parse(ev.data));
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      for (const { reject } of this.pending.values()) reject(new ChatError('offline', 'the connection closed'));
      this.pending.clear();
      this.emit('state', 'offline');
      this.scheduleReconnect();
    };
    this.retryMs = 500;
    await this.sync();
    await this.flushPending();
    this.emit('state', 'connected');
  }

  /** Closes the connection and stays offline (as a phone in a tunnel does). */
  disconnect() {
    this.stopped = true;
    const ws = this.ws;
    this.ws = null;
    ws?.close();
    for (const { reject } of this.pending.values()) reject(new ChatError('offline', 'disconnected'));
    this.pending.clear();
    this.emit('state', 'offline');
  }

  scheduleReconnect() {
    if (this.stopped) return;
    const wait = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, 15_000);
    setTimeout(() => { if (!this.stopped && !this.ws) this.connect().catch(() => {}); }, wait);
  }

  /**
   * Sends a request and resolves with its answer, or rejects with a ChatError.
   * @param {Record<string, any>} msg
   * @returns {Promise<any>}
   */
  request(msg) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(new ChatError('offline', 'not connected'));
    const req = this.nextReq++;
    return new Promise((resolve, reject) => {
      this.pending.set(req, { resolve, reject });
      ws.send(JSON.stringify({ ...msg, req }));
    });
  }

  /** @param {any} msg */
  receive(msg) {
    if (msg.req !== undefined && this.pending.has(msg.req)) {
      const waiter = /** @type {{resolve: (m: any) => void, reject: (e: Error) => void}} */ (this.pending.get(msg.req));
      this.pending.delete(msg.req);
      if (msg.type === 'error') waiter.reject(new ChatError(msg.code, msg.message));
      else waiter.resolve(msg);
      return;
    }
    switch (msg.type) {
      case 'chat_event': this.apply(msg); break;
      case 'chat_conversation': this.upsert(msg.conversation); break;
      case 'chat_receipt': {
        const conv = this.conversations.get(msg.conversation);
        if (!conv) break;
        conv.receipts.set(msg.member, { delivered_seq: msg.delivered_seq, read_seq: msg.read_seq });
        if (this.principals.includes(msg.member)) {
          conv.readSeq = Math.max(conv.readSeq, msg.read_seq);
          conv.unread = this.countUnread(conv);
        }
        this.emit('receipt', conv, msg.member);
        break;
      }
      case 'chat_typing': {
        const conv = this.conversations.get(msg.conversation);
        if (conv) this.emit('typing', conv, msg.member);
        break;
      }
      case 'chat_presence':
        this.presence.set(msg.user, msg.status);
        this.emit('presence', msg.user, msg.status);
        break;
      case 'error': this.emit('error', new ChatError(msg.code, msg.message)); break;
    }
  }

  /** @param {ConversationInfo} info */
  upsert(info) {
    let conv = this.conversations.get(info.id);
    if (!conv) {
      conv = { info, events: new Map(), unread: 0, readSeq: 0, receipts: new Map(), pending: [] };
      this.conversations.set(info.id, conv);
    } else {
      conv.info = { ...info, last_seq: Math.max(info.last_seq, conv.info.last_seq) };
    }
    this.emit('conversation', conv);
    return conv;
  }

  /** The highest sequence number below which this client misses nothing. */
  /** @param {Conversation} conv */
  cursor(conv) {
    let c = 0;
    while (conv.events.has(c + 1)) c++;
    return c;
  }

  /** @param {Conversation} conv */
  countUnread(conv) {
    let n = 0;
    for (const e of conv.events.values()) {
      if (e.seq > conv.readSeq && MESSAGE_KINDS.includes(e.kind) && !this.principals.includes(e.sender)
          && (e.state === 'normal' || e.state === 'edited')) n++;
    }
    return n;
  }

  /**
   * Applies one event, once: edits and recalls rewrite the message they target.
   * @param {ChatEvent} event
   */
  apply(event) {
    const conv = this.conversations.get(event.conversation);
    if (!conv) {
      // A conversation this device has not heard of yet: fetch it whole.
      this.sync().catch(() => {});
      return;
    }
    if (conv.events.has(event.seq)) return;
    conv.events.set(event.seq, event);
    conv.info.last_seq = Math.max(conv.info.last_seq, event.seq);
    const target = event.target_seq !== undefined ? conv.events.get(event.target_seq) : undefined;
    if (target && event.kind === 'edit') { target.body = event.body; target.state = 'edited'; }
    if (target && (event.kind === 'recall' || event.kind === 'delete')) {
      target.body = {};
      target.state = event.kind === 'recall' ? 'recalled' : 'deleted';
    }
    conv.unread = this.countUnread(conv);
    this.emit('message', conv, target ?? event);
  }

  /** Catches up on every conversation from this client's cursors. */
  async sync() {
    for (;;) {
      /** @type {Record<string, number>} */
      const cursors = {};
      for (const [id, conv] of this.conversations) cursors[id] = this.cursor(conv);
      const synced = await this.request({ type: 'chat_sync', cursors });
      let more = false;
      for (const view of synced.conversations) {
        const conv = this.upsert(view.conversation);
        for (const e of view.events) this.apply(e);
        conv.readSeq = Math.max(conv.readSeq, view.read_seq);
        for (const r of view.receipts) conv.receipts.set(r.member, r);
        conv.unread = view.has_more ? view.unread : this.countUnread(conv);
        more ||= view.has_more;
      }
      if (!more) break;
    }
    this.emit('synced');
  }

  /** Sends queued messages; each keeps its client id, so a resend is never a duplicate. */
  async flushPending() {
    for (const conv of this.conversations.values()) {
      while (conv.pending.length) {
        const p = conv.pending[0];
        await this.request({ type: 'chat_send', conversation: conv.info.id, client_msg_id: p.clientMsgId, kind: p.kind, body: p.body });
        conv.pending.shift();
      }
    }
  }

  /**
   * Sends a message. Resolves with the ack once it is durable; while offline it waits in
   * a queue and goes out on reconnecting.
   * @param {string} conversation @param {string} kind @param {any} body
   */
  async send(conversation, kind, body) {
    const conv = this.conversations.get(conversation);
    if (!conv) throw new ChatError('conversation_not_found', `unknown conversation ${conversation}`);
    const item = { clientMsgId: crypto.randomUUID(), kind, body };
    conv.pending.push(item);
    this.emit('message', conv, null);
    try {
      const ack = await this.request({ type: 'chat_send', conversation, client_msg_id: item.clientMsgId, kind, body });
      conv.pending = conv.pending.filter((p) => p !== item);
      return ack;
    } catch (e) {
      // Refused for good (not just offline): drop it, and say why.
      if (e instanceof ChatError && e.code !== 'offline') conv.pending = conv.pending.filter((p) => p !== item);
      this.emit('message', conv, null);
      throw e;
    }
  }

  /** @param {string} conversation @param {string} text */
  sendText(conversation, text) { return this.send(conversation, 'text', { text }); }

  /** @param {string} peer a user or `shop:<id>` */
  async openDirect(peer) {
    const reply = await this.request({ type: 'chat_open_direct', peer });
    return this.upsert(reply.conversation);
  }

  /** @param {string} title @param {string[]} members */
  async createGroup(title, members) {
    const reply = await this.request({ type: 'chat_create_group', title, members });
    return this.upsert(reply.conversation);
  }

  /** Marks everything up to `seq` as read (and delivered). @param {string} conversation @param {number} seq */
  async markRead(conversation, seq) {
    const conv = this.conversations.get(conversation);
    if (!conv || seq <= conv.readSeq) return;
    conv.readSeq = seq;
    conv.unread = this.countUnread(conv);
    await this.request({ type: 'chat_receipt', conversation, read: seq });
  }

  /** @param {string} conversation */
  typing(conversation) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: 'chat_typing', conversation }));
  }

  /** @param {'online'|'away'} status */
  setPresence(status) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: 'chat_presence', status }));
  }

  /** @param {string} conversation @param {number} seq @param {any} body */
  edit(conversation, seq, body) { return this.request({ type: 'chat_edit', conversation, seq, body }); }

  /** @param {string} conversation @param {number} seq */
  recall(conversation, seq) { return this.request({ type: 'chat_recall', conversation, seq }); }

  /**
   * A message in the reader's language.
   * @param {string} conversation @param {number} seq @param {string} locale
   * @returns {Promise<string>}
   */
  async translate(conversation, seq, locale) {
    const reply = await this.request({ type: 'chat_translate', conversation, seq, locale });
    return reply.text;
  }

  /** Loads older events. @param {string} conversation @param {number} [before] */
  async history(conversation, before) {
    const page = await this.request({ type: 'chat_history', conversation, before, limit: 50 });
    for (const e of page.events) this.apply(e);
    return page.has_more;
  }
}
