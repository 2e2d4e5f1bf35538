#!/usr/bin/env node
/*
  QEWD.js's own client library (socket.io-client 2.x, transports ['websocket'], as ewd-client
  uses with a url), driven line by line from a test:
    stdin:  one JSON command per line: {"emit": {...}} sends it on `ewdjs`; {"close": true} ends.
    stdout: one JSON event per line: {"event":"connect","id":..}, {"event":"ewdjs","data":{..}},
            {"event":"disconnect","reason":..}, {"event":"connect_error","error":..}.
  The test holds the token; this script only relays. socket.io-client comes from NODE_PATH.
*/
'use strict';
const io = require('socket.io-client');
const readline = require('readline');

const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const socket = io(process.argv[2], { transports: ['websocket'], reconnection: false });

socket.on('connect', () => out({ event: 'connect', id: socket.id }));
socket.on('connect_error', (e) => out({ event: 'connect_error', error: String(e) }));
socket.on('disconnect', (reason) => out({ event: 'disconnect', reason }));
socket.on('ewdjs', (data) => out({ event: 'ewdjs', data }));

const end = () => { socket.close(); process.exit(0); };
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (!line.trim()) return;
  const cmd = JSON.parse(line);
  if (cmd.emit) socket.emit('ewdjs', cmd.emit);
  if (cmd.close) end();
});
process.stdin.on('end', end);
