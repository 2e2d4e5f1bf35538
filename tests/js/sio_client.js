#!/usr/bin/env node
/*
  QEWD.js's own client library (socket.io-client 2.x, transports ['websocket']) against a node:
  register (JWT), login as rob / secret, then echo with the new token. Prints each ewdjs
  payload as one JSON line; exits 0 when the echo reply arrives, 1 on error or after 10 s.
*/
'use strict';
const io = require('socket.io-client');
const url = process.argv[2];
const socket = io(url, { transports: ['websocket'], reconnection: false });
let token = null;
const fail = (why) => { console.error(why); process.exit(1); };
setTimeout(() => fail('timed out'), 10000);
socket.on('connect_error', (e) => fail('connect_error: ' + e));
socket.on('connect', () => socket.emit('ewdjs', { type: 'ewd-register', application: 'demo', jwt: true }));
socket.on('ewdjs', (msg) => {
  console.log(JSON.stringify(msg));
  if (msg.message && msg.message.token) token = msg.message.token;
  if (msg.type === 'ewd-register') {
    socket.emit('ewdjs', { type: 'login', token, params: { username: 'rob', password: 'secret' } });
  } else if (msg.type === 'login' && msg.finished) {
    socket.emit('ewdjs', { type: 'echo', token, params: 'from socket.io-client' });
  } else if (msg.type === 'echo') {
    socket.close();
    process.exit(0);
  }
});
