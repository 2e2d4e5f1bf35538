/*
  A QEWD.js micro-service node whose application "api" serves REST routes through qewd-router's
  addMicroServiceHandler (tests/interop/js/rest_ms_app.js), for
  tests/interop/test_rest_interop.py. Run with the QEWD.js peer's run folder as the working
  directory and NODE_PATH pointing at its node_modules:
    QEWD_REST_MS_PORT   this node's port
    QEWD_REDIS_PORT     the peer's Redis (QEWD.js needs a document store)
*/
'use strict';
var path = require('path');
require(path.join(process.cwd(), 'loopback-only'));

var config = {
  managementPassword: 'keepThisSecret!',
  serverName: 'REST micro-service (interop test)',
  port: parseInt(process.env.QEWD_REST_MS_PORT, 10),
  poolSize: 1,
  database: {type: 'redis',
             params: {host: '127.0.0.1', port: parseInt(process.env.QEWD_REDIS_PORT || '16379', 10)}},
  sessionDocumentName: 'qewdRestMsSession',
  moduleMap: {api: path.join(__dirname, 'rest_ms_app.js')},
  jwt: {secret: 'someSecret123'}
};
require('qewd').master.start(config);
