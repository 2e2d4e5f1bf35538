#!/usr/bin/env node
/*
  socket.io-client 2.x, unmodified, against a node over Engine.IO long-polling:
    node sio_polling.js URL default   -- io(url): starts on polling, upgrades to WebSocket
    node sio_polling.js URL polling   -- io(url, {transports: ['polling']}): polling only
  Registers (JWT), logs in as rob / secret, then sends 50 echo requests at once (the upgrade,
  if any, happens while their replies are in flight) and, once all are back and (default mode)
  the transport upgraded, one more echo. Prints each ewdjs payload as one JSON line and a last
  line {"done": true, "transport": ..., "upgraded": ..., "echoes": {...}}; exits 0, or 1 on an
  error or after 20 s.
*/
'use strict';
const io = require('socket.io-client');
const [url, mode] = process.argv.slice(2);
const options = { reconnection: false };
if (mode === 'polling') options.transports = ['polling'];
const socket = io(url, options);
const engine = socket.io.engine;
const N = 50;
let token = null;
let upgraded = false;
let lastSent = false;
const echoes = {};
const fail = (why) => { console.error(why); process.exit(1); };
setTimeout(() => fail('timed out; upgraded=' + upgraded + ' echoes=' + Object.keys(echoes).length), 20000);
engine.on('upgrade', () => { upgraded = true; maybeLast(); });
socket.on('connect_error', (e) => fail('connect_error: ' + e));
socket.on('error', (e) => fail('error: ' + e));
socket.on('disconnect', (why) => { if (!lastSent) fail('disconnected: ' + why); });
socket.on('connect', () => socket.emit('ewdjs', { type: 'ewd-register', application: 'demo', jwt: true }));

function maybeLast() {
  const all = Object.keys(echoes).length === N;
  if (all && !lastSent && (upgraded || mode === 'polling')) {
    lastSent = true;
    socket.emit('ewdjs', { type: 'echo', token, params: 'last' });
  }
}

socket.on('ewdjs', (msg) => {
  console.log(JSON.stringify(msg));
  if (msg.message && msg.message.token) token = msg.message.token;
  if (msg.type === 'ewd-register') {
    socket.emit('ewdjs', { type: 'login', token, params: { username: 'rob', password: 'secret' } });
  } else if (msg.type === 'login' && msg.finished) {
    for (let i = 0; i < N; i++) socket.emit('ewdjs', { type: 'echo', token, params: 'n' + i });
  } else if (msg.type === 'echo') {
    const p = msg.message['you sent'];
    if (p === 'last') {
      console.log(JSON.stringify({ done: true, transport: engine.transport.name, upgraded, echoes }));
      lastSent = true;
      socket.close();
      process.exit(0);
    }
    echoes[p] = (echoes[p] || 0) + 1;
    maybeLast();
  }
});
