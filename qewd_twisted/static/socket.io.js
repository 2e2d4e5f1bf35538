/*
 * socket.io.js: a small socket.io v2 client written for qewd-twisted.
 *
 * Served by every qewd-twisted node at /socket.io/socket.io.js, where QEWD pages load the
 * socket.io client from. It speaks the socket.io protocol revision 4 over Engine.IO protocol 3
 * (EIO=3), WebSocket transport only, on the default namespace "/": enough for QEWD pages and
 * /ewd-client.js, not a full socket.io client. See docs/browser.md.
 *
 *   var socket = io();                      // same origin, or io('http://host:port', opts)
 *   socket.on('connect', function () { socket.emit('ewdjs', {type: 'ewd-register', ...}); });
 *   socket.on('ewdjs', function (frame) { ... });
 *
 * Options (socket.io-client 2 names and defaults): path ('/socket.io'), query (object or
 * string), reconnection (true), reconnectionAttempts (Infinity), reconnectionDelay (1000 ms),
 * reconnectionDelayMax (5000 ms), randomizationFactor (0.5), timeout (20000 ms, to get the
 * OPEN packet and the namespace connect), autoConnect (true). `transports` is accepted and
 * ignored: only WebSocket is spoken (qewd-twisted nodes serve no long-polling).
 *
 * Socket: on / once / off / listeners / hasListeners, emit(event, ...args) to the server,
 * send(...args) (the "message" event), open() / connect(), close() / disconnect(), and the
 * properties connected, disconnected, id (the Engine.IO sid, as socket.io 2 sets it).
 * Local events: connect, disconnect(reason), connect_error(error), connect_timeout(ms),
 * reconnect_attempt(n), reconnecting(n), reconnect_error(error), reconnect_failed,
 * reconnect(n), error(data), ping, pong(ms).
 *
 * Not supported: acknowledgement callbacks, binary payloads, namespaces other than "/",
 * long-polling. ES5 on purpose: QEWD pages are old pages.
 */
(function (root) {
  'use strict';

  // Engine.IO 3 packet types (one digit in front of every text frame).
  var EIO_OPEN = '0';
  var EIO_CLOSE = '1';
  var EIO_PING = '2';
  var EIO_PONG = '3';
  var EIO_MESSAGE = '4';
  // socket.io packet types, inside an Engine.IO MESSAGE.
  var SIO_CONNECT = '0';
  var SIO_DISCONNECT = '1';
  var SIO_EVENT = '2';
  var SIO_ERROR = '4';

  // Names socket.io-client 2 fires locally; emit() of one of them stays local, as there.
  var LOCAL_EVENTS = {
    connect: 1, connect_error: 1, connect_timeout: 1, connecting: 1, disconnect: 1, error: 1,
    reconnect: 1, reconnect_attempt: 1, reconnect_failed: 1, reconnect_error: 1,
    reconnecting: 1, ping: 1, pong: 1
  };

  var DEFAULTS = {
    path: '/socket.io',
    reconnection: true,
    reconnectionAttempts: Infinity,
    reconnectionDelay: 1000,
    reconnectionDelayMax: 5000,
    randomizationFactor: 0.5,
    timeout: 20000,
    autoConnect: true
  };

  function merge(defaults, given) {
    var out = {}, k;
    for (k in defaults) if (Object.prototype.hasOwnProperty.call(defaults, k)) out[k] = defaults[k];
    if (given) {
      for (k in given) {
        if (Object.prototype.hasOwnProperty.call(given, k) && given[k] !== undefined) out[k] = given[k];
      }
    }
    return out;
  }

  function warn(text) {
    if (root.console && root.console.warn) root.console.warn('[socket.io] ' + text);
  }

  // "http://host:8080/ns" -> {origin: "ws://host:8080", nsp: "/ns"}. A missing or relative URL
  // means this page's host, as in socket.io-client.
  function parseUri(uri) {
    var loc = root.location || {protocol: 'http:', host: 'localhost'};
    var pageSecure = loc.protocol === 'https:';
    if (!uri) uri = loc.protocol + '//' + loc.host;
    if (uri.charAt(0) === '/' && uri.charAt(1) === '/') uri = loc.protocol + uri;
    else if (uri.charAt(0) === '/') uri = loc.protocol + '//' + loc.host + uri;
    else if (!/^[a-z][a-z0-9+.\-]*:\/\//i.test(uri)) uri = (pageSecure ? 'https://' : 'http://') + uri;
    var m = /^([a-z][a-z0-9+.\-]*):\/\/([^\/?#]+)([^?#]*)/i.exec(uri);
    if (!m) throw new Error('socket.io: cannot parse URL ' + uri);
    var scheme = m[1].toLowerCase();
    var secure = scheme === 'https' || scheme === 'wss';
    return {origin: (secure ? 'wss://' : 'ws://') + m[2], nsp: m[3] || '/'};
  }

  function queryString(query) {
    if (!query) return '';
    if (typeof query === 'string') return query.charAt(0) === '&' ? query : '&' + query;
    var parts = [];
    for (var k in query) {
      if (Object.prototype.hasOwnProperty.call(query, k)) {
        parts.push(encodeURIComponent(k) + '=' + encodeURIComponent(query[k]));
      }
    }
    return parts.length ? '&' + parts.join('&') : '';
  }

  function Socket(uri, opts) {
    var parsed = parseUri(uri);
    if (parsed.nsp !== '/') warn('only the default namespace is supported; ignoring ' + parsed.nsp);
    this.opts = merge(DEFAULTS, opts);
    this.nsp = '/';
    this.uri = parsed.origin;
    this.connected = false;
    this.disconnected = true;
    this.id = undefined;
    this.io = this; // socket.io code sometimes reaches the manager as socket.io; we are both
    this._listeners = {};
    this._sendBuffer = [];
    this._ws = null;
    this._attempts = 0;         // failed connection attempts since the last success
    this._reconnecting = false; // true from a loss until the next successful connect
    this._closedByUser = false;
    this._timers = {};
    this._pingSentAt = 0;
    if (this.opts.autoConnect) this.open();
  }

  var proto = Socket.prototype;

  // -- local events ----------------------------------------------------------------------

  proto.on = function (event, fn) {
    (this._listeners[event] = this._listeners[event] || []).push(fn);
    return this;
  };
  proto.addEventListener = proto.on;

  proto.once = function (event, fn) {
    var self = this;
    function wrapper() {
      self.off(event, wrapper);
      fn.apply(self, arguments);
    }
    wrapper.fn = fn;
    return this.on(event, wrapper);
  };

  proto.off = function (event, fn) {
    if (arguments.length === 0) {
      this._listeners = {};
      return this;
    }
    var list = this._listeners[event];
    if (!list) return this;
    if (arguments.length === 1) {
      delete this._listeners[event];
      return this;
    }
    for (var i = 0; i < list.length; i++) {
      if (list[i] === fn || list[i].fn === fn) {
        list.splice(i, 1);
        break;
      }
    }
    return this;
  };
  proto.removeListener = proto.off;
  proto.removeAllListeners = proto.off;
  proto.removeEventListener = proto.off;

  proto.listeners = function (event) {
    return (this._listeners[event] || []).slice();
  };

  proto.hasListeners = function (event) {
    return !!(this._listeners[event] && this._listeners[event].length);
  };

  proto._fire = function (event) {
    var list = this._listeners[event];
    if (!list || !list.length) return;
    var args = Array.prototype.slice.call(arguments, 1);
    list = list.slice(); // a listener may remove itself
    for (var i = 0; i < list.length; i++) {
      try {
        list[i].apply(this, args);
      } catch (e) {
        // One failing listener must not stop the others nor the socket's own bookkeeping.
        if (root.console && root.console.error) root.console.error(e);
      }
    }
  };

  // -- sending ---------------------------------------------------------------------------

  proto.emit = function (event) {
    if (LOCAL_EVENTS.hasOwnProperty(event)) {
      this._fire.apply(this, arguments);
      return this;
    }
    var args = Array.prototype.slice.call(arguments);
    if (typeof args[args.length - 1] === 'function') {
      warn('acknowledgement callbacks are not supported; the callback is ignored');
      args.pop();
    }
    var packet = EIO_MESSAGE + SIO_EVENT + JSON.stringify(args);
    if (this.connected) this._ws.send(packet);
    else this._sendBuffer.push(packet); // sent once connected, as socket.io does
    return this;
  };

  proto.send = function () {
    var args = Array.prototype.slice.call(arguments);
    args.unshift('message');
    return this.emit.apply(this, args);
  };

  // -- opening and closing ---------------------------------------------------------------

  proto.open = function () {
    if (this._ws || this.connected) return this;
    this._closedByUser = false;
    this._clearTimer('reconnect');
    this._openTransport();
    return this;
  };
  proto.connect = proto.open;

  proto.close = function () {
    this._closedByUser = true;
    this._clearTimer('reconnect');
    var wasConnected = this.connected;
    if (this._ws && wasConnected) {
      try {
        this._ws.send(EIO_MESSAGE + SIO_DISCONNECT);
      } catch (e) { /* closing anyway */ }
    }
    this._dropTransport();
    this._reconnecting = false;
    this._attempts = 0;
    if (wasConnected) this._lost('io client disconnect');
    return this;
  };
  proto.disconnect = proto.close;

  proto._endpoint = function () {
    var path = this.opts.path.replace(/\/+$/, '');
    return this.uri + path + '/?EIO=3&transport=websocket' + queryString(this.opts.query);
  };

  proto._openTransport = function () {
    var self = this, ws;
    this._fire('connecting');
    try {
      ws = new root.WebSocket(this._endpoint());
    } catch (e) {
      this._failed(e);
      return;
    }
    this._ws = ws;
    this._setTimer('connect', this.opts.timeout, function () {
      self._fire('connect_timeout', self.opts.timeout);
      self._dropTransport();
      self._failed(new Error('timeout'));
    });
    ws.onmessage = function (ev) {
      if (self._ws === ws) self._onFrame(String(ev.data));
    };
    ws.onclose = function () {
      if (self._ws !== ws) return; // a transport we already gave up on
      var wasConnected = self.connected;
      self._dropTransport();
      if (wasConnected) self._lost('transport close');
      else self._failed(new Error('websocket error'));
    };
    ws.onerror = function () { /* a close event follows */ };
  };

  // Forget the current WebSocket: no handler of it runs again.
  proto._dropTransport = function () {
    var ws = this._ws;
    this._ws = null;
    this._clearTimer('connect');
    this._clearTimer('ping');
    this._clearTimer('pong');
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close();
      } catch (e) { /* already closed */ }
    }
  };

  // A connected socket went away.
  proto._lost = function (reason) {
    this.connected = false;
    this.disconnected = true;
    this.id = undefined;
    this._fire('disconnect', reason);
    if (reason === 'io client disconnect' || reason === 'io server disconnect') return;
    this._reconnect();
  };

  // A connection attempt failed before the namespace connected.
  proto._failed = function (error) {
    this._fire('connect_error', error);
    if (this._reconnecting) this._fire('reconnect_error', error);
    this._reconnect();
  };

  proto._reconnect = function () {
    if (this._closedByUser || !this.opts.reconnection) return;
    if (this._attempts >= this.opts.reconnectionAttempts) {
      this._reconnecting = false;
      this._fire('reconnect_failed');
      return;
    }
    var self = this;
    var delay = this._backoff(this._attempts);
    this._attempts += 1;
    this._reconnecting = true;
    this._fire('reconnecting', this._attempts);
    this._setTimer('reconnect', delay, function () {
      self._fire('reconnect_attempt', self._attempts);
      self._openTransport();
    });
  };

  // Exponential backoff: reconnectionDelay * 2^n, spread by +/- randomizationFactor, capped.
  proto._backoff = function (n) {
    var ms = this.opts.reconnectionDelay * Math.pow(2, n);
    var spread = this.opts.randomizationFactor;
    if (spread > 0) {
      var deviation = Math.random() * spread * ms;
      ms = Math.random() < 0.5 ? ms - deviation : ms + deviation;
    }
    return Math.max(0, Math.min(ms, this.opts.reconnectionDelayMax));
  };

  // -- receiving -------------------------------------------------------------------------

  proto._onFrame = function (data) {
    var kind = data.charAt(0), body = data.slice(1);
    if (kind === EIO_OPEN) {
      var handshake;
      try {
        handshake = JSON.parse(body);
      } catch (e) {
        return this._protocolError('bad OPEN packet');
      }
      this.id = handshake.sid;
      this._pingInterval = handshake.pingInterval || 25000;
      this._pingTimeout = handshake.pingTimeout || 20000;
      this._schedulePing();
    } else if (kind === EIO_PONG) {
      this._clearTimer('pong');
      this._fire('pong', new Date().getTime() - this._pingSentAt);
      this._schedulePing();
    } else if (kind === EIO_PING) {
      this._ws.send(EIO_PONG + body); // servers do not ping in EIO 3, but answering is harmless
    } else if (kind === EIO_MESSAGE) {
      this._onPacket(body);
    } else if (kind === EIO_CLOSE) {
      var wasConnected = this.connected;
      this._dropTransport();
      if (wasConnected) this._lost('transport close');
      else this._failed(new Error('transport closed'));
    }
    // 5 (upgrade) and 6 (noop) need nothing.
  };

  proto._onPacket = function (packet) {
    var kind = packet.charAt(0), rest = packet.slice(1), nsp = '/';
    if (rest.charAt(0) === '/') {
      var comma = rest.indexOf(',');
      nsp = comma === -1 ? rest : rest.slice(0, comma);
      rest = comma === -1 ? '' : rest.slice(comma + 1);
    }
    if (nsp !== '/') return;
    rest = rest.replace(/^\d+/, ''); // an ack id: acks are not supported
    if (kind === SIO_CONNECT) {
      this._connected();
    } else if (kind === SIO_EVENT) {
      var args;
      try {
        args = JSON.parse(rest);
      } catch (e) {
        return warn('ignoring an event that is not JSON');
      }
      if (Object.prototype.toString.call(args) === '[object Array]' && typeof args[0] === 'string') {
        this._fire.apply(this, args);
      }
    } else if (kind === SIO_DISCONNECT) {
      // The server closed the namespace: socket.io does not reconnect after that.
      this._closedByUser = true;
      this._dropTransport();
      if (this.connected) this._lost('io server disconnect');
    } else if (kind === SIO_ERROR) {
      var data = rest;
      try {
        data = JSON.parse(rest);
      } catch (e) { /* keep the text */ }
      this._fire('error', data);
    }
  };

  proto._connected = function () {
    if (this.connected) return;
    this._clearTimer('connect');
    var reconnected = this._reconnecting, attempts = this._attempts;
    this._reconnecting = false;
    this._attempts = 0;
    this.connected = true;
    this.disconnected = false;
    this._fire('connect');
    // Buffered emits go after the connect listeners' own (e.g. ewd-client's re-register).
    var buffered = this._sendBuffer;
    this._sendBuffer = [];
    for (var i = 0; i < buffered.length && this.connected; i++) this._ws.send(buffered[i]);
    if (!this.connected) this._sendBuffer = buffered.slice(i).concat(this._sendBuffer);
    if (reconnected) this._fire('reconnect', attempts);
  };

  proto._protocolError = function (why) {
    warn(why);
    var wasConnected = this.connected;
    this._dropTransport();
    if (wasConnected) this._lost('transport error');
    else this._failed(new Error(why));
  };

  // -- heartbeat: the client pings every pingInterval and wants a pong within pingTimeout --

  proto._schedulePing = function () {
    var self = this;
    this._clearTimer('ping');
    this._setTimer('ping', this._pingInterval, function () {
      if (!self._ws) return;
      self._pingSentAt = new Date().getTime();
      self._ws.send(EIO_PING);
      self._fire('ping');
      self._setTimer('pong', self._pingTimeout, function () {
        var wasConnected = self.connected;
        self._dropTransport();
        if (wasConnected) self._lost('ping timeout');
        else self._failed(new Error('ping timeout'));
      });
    });
  };

  proto._setTimer = function (name, ms, fn) {
    this._clearTimer(name);
    var self = this;
    this._timers[name] = setTimeout(function () {
      delete self._timers[name];
      fn();
    }, ms);
  };

  proto._clearTimer = function (name) {
    if (this._timers[name] !== undefined) {
      clearTimeout(this._timers[name]);
      delete this._timers[name];
    }
  };

  // -- the io() entry point --------------------------------------------------------------

  function io(uri, opts) {
    if (typeof uri === 'object' && uri !== null) {
      opts = uri;
      uri = undefined;
    }
    return new Socket(uri, opts);
  }

  io.connect = io;
  io.Socket = Socket;
  io.protocol = 4; // the socket.io protocol revision socket.io 2 speaks
  io.version = 'qewd-twisted';

  if (typeof module !== 'undefined' && module.exports) module.exports = io;
  root.io = io;
}(typeof window !== 'undefined' ? window : this));
