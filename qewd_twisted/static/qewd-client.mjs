/*
 * qewd-client.mjs: a modern ES-module client for qewd-twisted nodes.
 *
 *   import {QEWD} from '/qewd-client.mjs';
 *   await QEWD.start({application: 'jwt', jwt: true});          // resolves once registered
 *   const reply = await QEWD.reply({type: 'login', params: {username: 'rob', password: 'secret'}},
 *                                  {onIntermediate: (frame) => show(frame.message.text)});
 *   if (reply.message.error) ...
 *   QEWD.on('ewd-frame', (frame) => ...);                          // every frame, broadcasts too
 *
 * Transport: the node's plain WebSocket endpoint /ws (one JSON message per text frame, the same
 * messages as socket.io's `ewdjs` event), so no socket.io script is needed. The endpoint has no
 * heartbeat: a lost connection is noticed when the browser closes the WebSocket.
 *
 * Every request carries a numeric ms_requestId that the node echoes on each of its frames, so
 * concurrent requests (of the same type too) each get their own replies. A dropped socket is
 * reopened with backoff and re-registered with {type: 'ewd-reregister', token, jwt: true};
 * requests in flight at the drop are rejected, requests made while disconnected wait for the
 * re-registration. See docs/browser.md.
 */

const SESSION_ERRORS = new Set([
  'Missing authorization header',
  'Invalid token or session expired',
  'Session expired',
]);
const CONNECTION_LOST = 'Connection lost before the reply arrived';

const isObject = (x) => x !== null && typeof x === 'object' && !Array.isArray(x);
const isWrappedArray = (m) => isObject(m) && Array.isArray(m.results) &&
  Object.keys(m).every((k) => k === 'results' || k === 'token');

/** The claims of a JWT, unverified (public claims readable, secret ones stay in `qewd`). */
export function decodeJWT(token) {
  const part = String(token).split('.')[1];
  if (!part) throw new Error('not a JWT');
  const b64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=');
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

/** The WebSocket URL of a node's /ws endpoint, from its http(s)/ws(s) base URL. */
function endpointOf(url) {
  const base = new URL(url || globalThis.location.href, globalThis.location?.href);
  const scheme = base.protocol === 'https:' || base.protocol === 'wss:' ? 'wss:' : 'ws:';
  const path = url ? base.pathname.replace(/\/+$/, '') : '';
  return `${scheme}//${base.host}${path}/ws`;
}

export class QEWDClient {
  #options = null;
  #ws = null;
  #token = null;
  #registered = false;     // registered on the current socket
  #everRegistered = false;
  #ended = null;           // the error that ended the session, once it has
  #started = null;         // start()'s promise and its settlers
  #listeners = new Map();  // type -> Set of functions
  #pending = new Map();    // ms_requestId -> request
  #waiting = [];           // requests made while not registered
  #nextId = 1;
  #attempts = 0;
  #reconnectTimer = null;
  #stopped = false;

  /** Connect and register; resolves (to this client) once registered. Only the first call counts. */
  start({application, url, jwt = false, token, log = false, reconnect = {}, correlate = true} = {}) {
    if (this.#started) return this.#started.promise;
    if (!application) return Promise.reject(new Error('QEWD.start needs an application'));
    this.#options = {
      application, url, jwt: !!jwt, log, correlate,
      reconnect: reconnect === false ? false : {delay: 1000, maxDelay: 5000, factor: 0.5, ...reconnect},
    };
    this.#token = token || null; // a token kept from an earlier page: resume that session
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    this.#started = {promise, resolve, reject};
    this.#open();
    return promise;
  }

  /** Send a message; the Promise resolves with its final frame (handler errors included:
   *  look at `frame.message.error`) and rejects only when no reply can come. */
  reply(message, options = {}) {
    const onIntermediate = typeof options === 'function' ? options : options.onIntermediate;
    return new Promise((resolve, reject) => {
      if (!this.#started) return reject(new Error('call QEWD.start() first'));
      if (this.#ended) return reject(this.#ended);
      if (this.#stopped) return reject(new Error('client stopped'));
      if (!isObject(message) || typeof message.type !== 'string') {
        return reject(new TypeError('a message needs a string type'));
      }
      const request = {id: this.#nextId++, type: message.type, message: {...message},
        onIntermediate, resolve, reject};
      if (this.#registered) this.#transmit(request);
      else this.#waiting.push(request);
    });
  }

  /** Callback form, like ewd-client's EWD.send: callback(frame) for every frame of the request. */
  send(message, callback) {
    const p = this.reply(message, callback ? (frame) => callback(frame) : undefined);
    p.then((frame) => callback && callback(frame), (err) => {
      if (callback) callback({type: message.type, finished: true, message: {error: err.message}});
    });
  }

  /** Listen to a local event or a message type; returns a function that removes the listener. */
  on(type, fn) {
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    this.#listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    if (fn === undefined) this.#listeners.delete(type);
    else this.#listeners.get(type)?.delete(fn);
  }

  once(type, fn) {
    const off = this.on(type, (data) => { off(); fn(data); });
    return off;
  }

  emit(type, data) {
    const set = this.#listeners.get(type);
    if (!set) return false;
    for (const fn of [...set]) {
      try {
        fn(data);
      } catch (e) {
        console.error(e);
      }
    }
    return set.size > 0;
  }

  get token() { return this.#token; }
  get registered() { return this.#registered; }
  get connected() { return this.#ws?.readyState === WebSocket.OPEN; }

  /** The token's public claims (false before registration or in session-token mode). */
  get jwt() {
    if (!this.#options?.jwt || !this.#token) return false;
    try {
      return decodeJWT(this.#token);
    } catch {
      return false;
    }
  }

  /** Close the socket for good; pending requests (and an unfinished start) are rejected. */
  stop() {
    if (this.#stopped) return;
    this.#stopped = true;
    clearTimeout(this.#reconnectTimer);
    if (this.#started && !this.#everRegistered) this.#started.reject(new Error('client stopped'));
    this.#closeSocket();
    this.#fail(this.#waiting.splice(0), new Error('client stopped'));
  }

  // -- the socket --------------------------------------------------------------------------

  /** Close the socket without reconnecting (stop, or a session the server ended). */
  #closeSocket() {
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      ws.onclose = ws.onmessage = null;
      ws.close(1000);
      this.#lost();
    }
  }

  #log(...args) {
    if (this.#options.log) console.log('[qewd]', ...args);
  }

  #open() {
    if (this.#stopped || this.#ended) return;
    let ws;
    try {
      ws = new WebSocket(endpointOf(this.#options.url));
    } catch (e) {
      // A URL the browser refuses: retrying cannot help.
      this.#ended = e;
      if (!this.#everRegistered) this.#started.reject(e);
      return;
    }
    this.#ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.#attempts = 0;
      this.emit('connect');
      const token = this.#token;
      const frame = token
        ? {type: 'ewd-reregister', token, ...(this.#options.jwt ? {jwt: true} : {})}
        : {type: 'ewd-register', application: this.#options.application, jwt: this.#options.jwt};
      ws.send(JSON.stringify(frame));
    };
    ws.onmessage = (ev) => {
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return this.#log('ignoring a frame that is not JSON');
      }
      this.#receive(frame);
    };
    ws.onclose = (ev) => {
      if (this.#ws !== ws) return;
      this.#ws = null;
      if (opened) this.#lost(ev.code, ev.reason);
      else this.emit('connect_error', ev);
      this.#scheduleReconnect();
    };
  }

  #lost(code, reason) {
    this.#registered = false;
    const inFlight = [...this.#pending.values()];
    this.#pending.clear();
    this.#fail(inFlight, new Error(CONNECTION_LOST));
    this.emit('socketDisconnected', {code, reason});
  }

  #scheduleReconnect() {
    const policy = this.#options.reconnect;
    if (this.#stopped || this.#ended || !policy) return;
    if (policy.attempts !== undefined && this.#attempts >= policy.attempts) {
      this.emit('reconnect_failed');
      return;
    }
    let ms = policy.delay * 2 ** this.#attempts;
    const deviation = Math.random() * policy.factor * ms;
    ms = Math.min(Math.random() < 0.5 ? ms - deviation : ms + deviation, policy.maxDelay);
    this.#attempts += 1;
    this.emit('reconnecting', this.#attempts);
    this.#reconnectTimer = setTimeout(() => this.#open(), Math.max(0, ms));
  }

  #transmit(request) {
    const out = {...request.message, token: this.#token};
    if (this.#options.correlate) out.ms_requestId = request.id;
    this.#pending.set(request.id, request);
    this.#ws.send(JSON.stringify(out));
    this.#log('sent', out.type);
  }

  #fail(requests, error) {
    for (const r of requests) r.reject(error);
  }

  // Which request a frame answers: the echoed ms_requestId, else (a node that does not echo
  // it) the oldest pending request of the frame's type, for reply-shaped frames only.
  #requestOf(frame) {
    if (frame.ms_requestId !== undefined) {
      const request = this.#pending.get(frame.ms_requestId);
      if (!request) return null;
      delete frame.ms_requestId;
      if (isObject(frame.message)) delete frame.message.ms_requestId;
      return request;
    }
    if (typeof frame.type !== 'string' || !('finished' in frame)) return null;
    for (const request of this.#pending.values()) {
      if (request.type === frame.type) return request;
    }
    return null;
  }

  #receive(frame) {
    if (!isObject(frame)) return;
    this.#log('received', frame);
    this.emit('ewd-frame', frame);
    const request = this.#requestOf(frame);
    let message = frame.message;

    if (request) {
      if (typeof frame.type !== 'string') frame.type = request.type;
      if (frame.type === 'error') {
        // A handler crash: {type: 'error', message: '<text>'} becomes the request's error reply.
        const text = typeof message === 'string' ? message : message?.error || 'error';
        frame = {type: request.type, finished: true, message: {error: text}, responseTime: frame.responseTime};
        message = frame.message;
      } else if (isWrappedArray(message)) {
        // §1.4: a correlated request's array reply comes as {results: [...]} (plus the
        // refreshed JWT in JWT mode): keep the token, resolve with the array.
        if (this.#options.jwt && typeof message.token === 'string') this.#token = message.token;
        frame.message = message = message.results;
      }
    }

    const error = isObject(message) ? message.error : undefined;
    if (error && (message.disconnect || (request && (!('finished' in frame) || SESSION_ERRORS.has(error))))) {
      return this.#endSession(frame, request);
    }
    if (frame.type === 'ewd-register' || frame.type === 'ewd-reregister') return this.#onRegistration(frame);

    if (error || frame.type === 'error') this.emit('error', frame);
    if (this.#options.jwt && isObject(message) && !error && typeof message.token === 'string') {
      this.#token = message.token;
    }
    if (!request) {
      if (typeof frame.type === 'string' && frame.type !== 'error') this.emit(frame.type, frame);
      return;
    }
    const final = frame.finished !== false;
    if (final && frame.type === request.type) {
      this.#pending.delete(request.id);
      request.resolve(frame);
    } else if (!final && request.onIntermediate) {
      try {
        request.onIntermediate(frame);
      } catch (e) {
        console.error(e);
      }
    }
    this.emit(frame.type, frame);
  }

  #onRegistration(frame) {
    const message = frame.message || {};
    if (message.error) {
      this.emit('error', frame);
      if (!this.#everRegistered) {
        this.#ended = Object.assign(new Error(message.error), {frame});
        this.#started.reject(this.#ended);
      }
      return;
    }
    if (typeof message.token === 'string') this.#token = message.token;
    const first = !this.#everRegistered;
    this.#registered = this.#everRegistered = true;
    if (frame.type === 'ewd-reregister') this.emit('ewd-reregistered', frame);
    if (first) {
      this.emit('ewd-registered', frame);
      this.#started.resolve(this);
    }
    for (const request of this.#waiting.splice(0)) this.#transmit(request);
  }

  // The token is no longer good (QEWD's `disconnect: true`, or the node's JWT rejection of a
  // correlated request, which comes without it): reply, then close for good, as QEWD does.
  #endSession(frame, request) {
    const error = Object.assign(new Error(frame.message.error), {frame});
    this.#ended = error;
    if (request) {
      this.#pending.delete(request.id);
      request.resolve(frame);
    }
    this.emit('error', frame);
    if (!this.#everRegistered) this.#started.reject(error);
    this.#fail(this.#waiting.splice(0), error);
    this.#closeSocket();
  }
}

/** The page's client, like ewd-client's EWD global. */
export const QEWD = new QEWDClient();
export default QEWD;
