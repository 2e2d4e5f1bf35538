/*
 * ewd-client.js: the EWD browser client, written for qewd-twisted.
 *
 * Served by every qewd-twisted node at /ewd-client.js. It keeps the API of QEWD.js's
 * ewd-client 1.21 (PROTOCOL.md §8), so a QEWD page that loads /socket.io/socket.io.js and then
 * this file runs unchanged:
 *
 *   EWD.on('ewd-registered', function () {
 *     EWD.send({type: 'login', params: {username: 'rob', password: 'secret'}}, function (frame) {
 *       if (frame.finished === false) return;        // an intermediate message
 *       if (frame.message.error) ... else ...
 *     });
 *   });
 *   EWD.start({application: 'jwt', io: io, jwt: true});   // or EWD.start('jwt', $, io)
 *
 * What it does differently from QEWD.js's client (docs/browser.md has the details):
 *  - every message carries a private numeric ms_requestId, which qewd-twisted nodes echo on
 *    every frame of that request, so each reply reaches the callback of the request it answers
 *    (QEWD's client keys callbacks by type: concurrent same-type requests got each other's
 *    replies). Frames without it fall back to the oldest pending request of that type;
 *  - JWT sessions survive a dropped socket: on reconnect it sends
 *    {type: 'ewd-reregister', token: <JWT>, jwt: true} and carries on with the refreshed token;
 *  - a request still waiting when the socket drops gets a final error frame, as the node can
 *    no longer answer it;
 *  - EWD.jwt decodes the token's public claims by itself (jwt_decode is optional);
 *  - every incoming frame is also emitted as the local event 'ewd-frame' (broadcasts have no type).
 *
 * ES5 on purpose: QEWD pages are old pages.
 */
var EWD = (function (root) {
  'use strict';

  // The node's session-token errors (§2.4). Like a JWT rejection, they end the session.
  var SESSION_ERRORS = {
    'Missing authorization header': 1,
    'Invalid token or session expired': 1,
    'Session expired': 1
  };
  var CONNECTION_LOST = 'Connection lost before the reply arrived';

  var ewd = {application: 'undefined', log: false};

  var listeners = {};   // local events: type -> [{callback, deleteWhenFinished}]
  var config = null;    // set by start()
  var socket = null;
  var token;            // session token or JWT
  var registered = false;
  var sessionEnded = false;
  var nextRequestId = 1;
  var pending = {};     // ms_requestId -> {id, type, callback, ajax}
  var pendingOrder = []; // ms_requestIds, oldest first (for frames that do not echo the id)

  function log(text) {
    if (root.console && root.console.log) root.console.log(text);
  }

  function isObject(x) {
    return x !== null && typeof x === 'object' && Object.prototype.toString.call(x) !== '[object Array]';
  }

  function copy(obj) {
    var out = {};
    for (var k in obj) if (Object.prototype.hasOwnProperty.call(obj, k)) out[k] = obj[k];
    return out;
  }

  function call(fn, arg) {
    try {
      fn(arg);
    } catch (e) {
      // A page's callback throwing must not break the client for every later frame.
      if (root.console && root.console.error) root.console.error(e);
    }
  }

  // -- local events (QEWD's EWD.on / off / emit) -----------------------------------------

  ewd.on = function (type, callback, deleteWhenFinished) {
    if (typeof callback !== 'function') return;
    (listeners[type] = listeners[type] || []).push({
      callback: callback,
      deleteWhenFinished: !!deleteWhenFinished
    });
  };

  ewd.off = function (type, callback) {
    if (typeof callback !== 'function') {
      delete listeners[type];
      return;
    }
    var list = listeners[type] || [];
    for (var i = list.length - 1; i >= 0; i--) {
      if (list[i].callback === callback) list.splice(i, 1);
    }
  };

  // Returns true when a listener was called (QEWD's returns nothing; no caller depends on it).
  ewd.emit = function (type, data) {
    var list = listeners[type];
    if (!list || !list.length) return false;
    data = data || {};
    var snapshot = list.slice();
    for (var i = 0; i < snapshot.length; i++) {
      var entry = snapshot[i];
      if (entry.deleteWhenFinished && data.finished) {
        var at = list.indexOf(entry);
        if (at !== -1) list.splice(at, 1);
      }
      call(entry.callback, data);
    }
    return true;
  };

  // -- tokens and cookies ----------------------------------------------------------------

  // The JWT's claims without verifying it (the browser has no secret): the public ones are
  // readable, the secret ones are inside the encrypted "qewd" claim.
  function decodeJWT(jwt) {
    var part = String(jwt).split('.')[1];
    if (!part) throw new Error('not a JWT');
    var b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    while (b64.length % 4) b64 += '=';
    var binary = root.atob(b64), escaped = '';
    for (var i = 0; i < binary.length; i++) {
      escaped += '%' + ('0' + binary.charCodeAt(i).toString(16)).slice(-2);
    }
    return JSON.parse(decodeURIComponent(escaped));
  }
  ewd.decodeJWT = decodeJWT;

  Object.defineProperty(ewd, 'jwt', {
    enumerable: true,
    get: function () {
      if (!config || !config.jwt || !token) return false;
      try {
        return config.jwtDecode(token);
      } catch (e) {
        return false;
      }
    }
  });

  function getCookie(name) {
    var parts = ('; ' + (root.document ? root.document.cookie : '')).split('; ' + name + '=');
    if (parts.length >= 2) return decodeURIComponent(parts.pop().split(';').shift());
    return undefined;
  }

  ewd.setCookie = function (name) {
    if (!token || !root.document) return;
    root.document.cookie = (name || 'ewd-token') + '=' + encodeURIComponent(token) +
      '; path=/; SameSite=Strict';
  };

  // -- requests waiting for their replies ------------------------------------------------

  function addPending(type, callback, ajax) {
    var id = nextRequestId++;
    pending[id] = {id: id, type: type, callback: callback, ajax: !!ajax};
    pendingOrder.push(id);
    return pending[id];
  }

  function removePending(entry) {
    delete pending[entry.id];
    var at = pendingOrder.indexOf(entry.id);
    if (at !== -1) pendingOrder.splice(at, 1);
  }

  // Which request a frame answers: by the echoed ms_requestId, else (a node that does not
  // echo it) the oldest pending request of that type, for reply-shaped frames only.
  function requestOf(frame) {
    var id = frame.ms_requestId;
    if (id !== undefined) {
      var entry = pending[id];
      if (!entry) return null;
      delete frame.ms_requestId;
      if (isObject(frame.message)) delete frame.message.ms_requestId;
      return entry;
    }
    if (typeof frame.type !== 'string' || !('finished' in frame)) return null;
    for (var i = 0; i < pendingOrder.length; i++) {
      var candidate = pending[pendingOrder[i]];
      if (candidate.type === frame.type && !candidate.ajax) return candidate;
    }
    return null;
  }

  // Every still-pending socket request gets a final error frame: the node sends replies only
  // to the socket that asked, so after a disconnect none of them can arrive.
  function failPending(text) {
    var ids = pendingOrder.slice();
    for (var i = 0; i < ids.length; i++) {
      var entry = pending[ids[i]];
      if (!entry || entry.ajax) continue;
      removePending(entry);
      if (entry.callback) {
        call(entry.callback, {type: entry.type, finished: true, message: {error: text}});
      }
    }
  }

  // -- incoming frames -------------------------------------------------------------------

  function handleResponse(frame, direct) {
    if (!isObject(frame)) return;
    if (ewd.log) log('received: ' + JSON.stringify(frame));
    ewd.emit('ewd-frame', frame);
    var entry = direct || requestOf(frame);
    var message = frame.message;

    if (entry) {
      if (typeof frame.type !== 'string') frame.type = entry.type; // e.g. QEWD's 503 frame
      if (frame.type === 'error') {
        // A handler crash: QEWD sends {type: 'error', message: '<text>'}; give the request's
        // callback the usual shape.
        frame = {type: entry.type, finished: true,
          message: {error: typeof message === 'string' ? message : (message && message.error) || 'error'},
          responseTime: frame.responseTime};
        message = frame.message;
      } else if (isWrappedArray(message)) {
        // A correlated request's array reply comes wrapped as {results: [...]} (§1.4), with the
        // refreshed JWT beside it in JWT mode: keep the token, give the page the array.
        if (config && config.jwt && typeof message.token === 'string') token = message.token;
        frame.message = message = message.results;
      }
    }

    var error = isObject(message) && message.error;
    if (error && (message.disconnect || (entry && endsSession(frame)))) {
      endSession(frame, entry);
      return;
    }

    if (frame.type === 'ewd-register' || frame.type === 'ewd-reregister') {
      if (entry) removePending(entry); // the ajax channel's register
      onRegistration(frame);
      return;
    }

    if (error || frame.type === 'error') ewd.emit('error', frame);
    if (config && config.jwt && isObject(message) && !error && typeof message.token === 'string') {
      token = message.token;
    }

    if (!entry) {
      if (typeof frame.type === 'string' && frame.type !== 'error') ewd.emit(frame.type, frame);
      return;
    }
    var final = frame.finished !== false;
    if (frame.type === entry.type) {
      if (final) removePending(entry);
      if (entry.callback) call(entry.callback, frame);
    }
    // Listeners of the type see it too (an intermediate message may have its own type).
    ewd.emit(frame.type, frame);
  }

  function isWrappedArray(message) {
    if (!isObject(message) || Object.prototype.toString.call(message.results) !== '[object Array]') {
      return false;
    }
    for (var k in message) {
      if (Object.prototype.hasOwnProperty.call(message, k) && k !== 'results' && k !== 'token') return false;
    }
    return true;
  }

  // A correlated error that means the token is no longer good: the node's JWT rejection
  // (no `finished`, §1.4) or a session-token error. With ms_requestId the node leaves out
  // `disconnect: true` (§2.4), so the client restores QEWD's behaviour itself.
  function endsSession(frame) {
    return !('finished' in frame) || SESSION_ERRORS.hasOwnProperty(frame.message.error);
  }

  function endSession(frame, entry) {
    if (entry) {
      removePending(entry);
      if (entry.callback) call(entry.callback, frame);
    }
    log(frame.message.error);
    sessionEnded = true;
    ewd.send = function () {}; // as QEWD: the page has to start again
    ewd.emit('error', frame);
    if (socket) {
      socket.disconnect();
      log('Socket disconnected');
    }
  }

  function onRegistration(frame) {
    var message = frame.message || {};
    if (message.error) {
      ewd.emit('error', frame);
      return;
    }
    if (typeof message.token === 'string') token = message.token;
    var first = !registered;
    registered = true;
    if (frame.type === 'ewd-register') {
      log(config.application + ' registered');
      ewd.emit('ewd-registered');
      return;
    }
    log('Re-registered');
    ewd.emit('ewd-reregistered');
    // A page that resumed a session from its cookie still learns that it can start sending.
    if (first) ewd.emit('ewd-registered');
  }

  // -- the socket ------------------------------------------------------------------------

  function onConnect() {
    if (sessionEnded) return;
    if (!token && config.cookieName) token = getCookie(config.cookieName);
    var message;
    if (token) {
      // A reconnect (or a session kept in a cookie): attach to the same session.
      message = {type: 'ewd-reregister', token: token};
      if (config.jwt) message.jwt = true;
    } else {
      message = {type: 'ewd-register', application: config.application, jwt: config.jwt};
    }
    socket.emit('ewdjs', message);
  }

  function onDisconnect() {
    log('*** the socket is disconnected (server gone, network down or token expired)');
    failPending(CONNECTION_LOST);
    ewd.emit('socketDisconnected');
  }

  function connectSocket() {
    var io = config.io;
    socket = config.url ? io(config.url, {transports: ['websocket']}) : (io.connect || io)();
    socket.on('connect', onConnect);
    socket.on('ewdjs', function (frame) {
      handleResponse(frame);
    });
    socket.on('disconnect', onDisconnect);
    ewd.disconnectSocket = function () {
      socket.disconnect();
      log('EWD disconnected socket');
    };
  }

  // -- sending ---------------------------------------------------------------------------

  function socketSend(messageObj, callback) {
    if (!token) {
      if (ewd.log) log('not sent (not registered yet): ' + JSON.stringify(messageObj));
      return;
    }
    var out = copy(messageObj);
    out.token = token;
    if (config.correlate) {
      out.ms_requestId = addPending(out.type, callback).id;
    } else if (callback) {
      ewd.on(out.type, callback, true); // QEWD's own behaviour: one listener list per type
    }
    socket.emit('ewdjs', out);
    if (ewd.log) log('sent: ' + JSON.stringify(messageObj));
  }

  // POST <url>/ajax, QEWD's HTTP channel (docs/protocol.md §1.7; docs/rest.md).
  function ajaxSend(messageObj, callback) {
    if (!token && messageObj.type !== 'ewd-register') return;
    var out = copy(messageObj);
    delete out.ajax;
    if (token) out.token = token;
    var entry = addPending(out.type, callback, true);
    var params = {url: (config.url || '') + '/ajax', type: 'post', contentType: 'application/json',
      data: out, dataType: 'json', timeout: 10000};

    function success(data) {
      if (!pending[entry.id]) return;
      if (data && data.ewd_response === false) {
        removePending(entry);
        return;
      }
      handleResponse({type: out.type, message: data, finished: true}, entry);
    }

    function fail(error) {
      if (!pending[entry.id]) return;
      var frame = {type: out.type, finished: true, message: {error: error}};
      removePending(entry);
      ewd.emit('error', frame);
      if (entry.callback) call(entry.callback, frame);
    }

    if (config.ajax) {
      config.ajax(params, success, fail);
    } else if (config.$ && config.$.ajax) {
      config.$.ajax({url: params.url, type: 'post', contentType: params.contentType,
        data: JSON.stringify(out), dataType: 'json', timeout: params.timeout})
        .done(success)
        .fail(function (xhr) {
          fail((xhr && xhr.responseJSON && xhr.responseJSON.error) || (xhr && xhr.statusText) || 'ajax error');
        });
    } else {
      var xhr = new root.XMLHttpRequest();
      xhr.open('POST', params.url);
      xhr.setRequestHeader('Content-Type', params.contentType);
      xhr.timeout = params.timeout;
      xhr.onload = function () {
        var body = null;
        try {
          body = JSON.parse(xhr.responseText);
        } catch (e) { /* not JSON */ }
        if (xhr.status >= 200 && xhr.status < 300) success(body);
        else fail((body && body.error) || xhr.statusText || ('HTTP ' + xhr.status));
      };
      xhr.onerror = xhr.ontimeout = function () {
        fail('ajax request failed');
      };
      xhr.send(JSON.stringify(out));
    }
  }

  ewd.send = function (messageObj, callback) {
    if (!config || !isObject(messageObj)) return;
    if (messageObj.ajax || !socket) ajaxSend(messageObj, callback);
    else socketSend(messageObj, callback);
  };

  ewd.getFragment = function (params, callback) {
    ewd.send({type: 'ewd-fragment', service: params.service || false, params: {file: params.name}},
      function (frame) {
        var message = frame.message || {};
        if (frame.finished === false || message.error) return; // errors go to the 'error' event
        var target = root.document && root.document.getElementById(params.targetId);
        if (config.$) config.$('#' + params.targetId).html(message.content);
        else if (target) target.innerHTML = message.content;
        if (callback) callback(params.name);
        ewd.emit('ewd-fragment:' + params.name, frame);
      });
  };

  // -- start -----------------------------------------------------------------------------

  // EWD.start(application, $, io, customAjaxFn, url) or
  // EWD.start({application, io, $, ajax, url, cookieName, jwt, jwt_decode, correlate, log})
  ewd.start = function (application, $, io, customAjaxFn, url) {
    if (config) return; // start can only be called once
    var o = isObject(application) ? application : {
      application: application, $: $, io: io, ajax: customAjaxFn, url: url, cookieName: 'ewdSession'
    };
    config = {
      application: o.application,
      $: o.$,
      io: o.io,
      ajax: o.ajax,
      url: o.url,
      cookieName: o.cookieName,
      jwt: !!o.jwt,
      jwtDecode: typeof o.jwt_decode === 'function' ? o.jwt_decode : decodeJWT,
      correlate: o.correlate !== false
    };
    ewd.application = config.application;
    if (o.log) ewd.log = true;
    if (config.io) {
      connectSocket();
    } else {
      ajaxSend({type: 'ewd-register', application: config.application, jwt: config.jwt});
    }
  };

  return ewd;
}(typeof window !== 'undefined' ? window : this));

if (typeof module !== 'undefined' && module.exports) module.exports = EWD;
