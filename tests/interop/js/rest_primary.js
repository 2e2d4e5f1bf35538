/*
  A QEWD.js primary ("orchestrator") with REST micro-service routes (u_services object form,
  docs/protocol.md §4.1 B, §4.5), for tests/interop/test_rest_interop.py. Run by the test with
  the QEWD.js peer's run folder as the working directory and NODE_PATH pointing at its
  node_modules, on ports the test chooses:
    QEWD_REST_PRIMARY_PORT  this node's HTTP port
    QEWD_REST_MS_URL        the Python micro-service (application "api")
    QEWD_REST_MS2_URL       optional: a second one; destination "both" is the group of the two
    QEWD_REDIS_PORT         the peer's Redis (QEWD.js needs a document store)
*/
'use strict';
var path = require('path');
require(path.join(process.cwd(), 'loopback-only'));

var PORT = parseInt(process.env.QEWD_REST_PRIMARY_PORT, 10);
var MS_URL = process.env.QEWD_REST_MS_URL;
var MS2_URL = process.env.QEWD_REST_MS2_URL;  // optional: a second micro-service, group "both"
var REDIS_PORT = parseInt(process.env.QEWD_REDIS_PORT || '16379', 10);

var config = {
  managementPassword: 'keepThisSecret!',
  serverName: 'REST primary (interop test)',
  port: PORT,
  poolSize: 1,
  database: {type: 'redis', params: {host: '127.0.0.1', port: REDIS_PORT}},
  sessionDocumentName: 'qewdRestPrimarySession',
  moduleMap: {api: path.join(__dirname, 'rest_local.js')},
  jwt: {secret: 'someSecret123'},
  u_services: {
    destinations: {
      py: {host: MS_URL, application: 'api'}
    },
    routes: [
      {path: '/api/users/:id', method: 'GET', destination: 'py'},
      {path: '/api/users', method: 'POST', destination: 'py'},
      {path: '/api/login', method: 'POST', destination: 'py', bypassJWTCheck: true},
      {path: '/api/crash', destination: 'py'},
      {path: '/api/store/:destination/stock', method: 'GET'},
      {path: '/qjs/users/:id', method: 'GET', destination: 'py'}  // bench/rest.py: to rest_ms.js
    ]
  }
};

var local = path.join(__dirname, 'rest_local.js');
if (MS2_URL) {
  config.u_services.destinations.py2 = {host: MS2_URL, application: 'api'};
  config.u_services.destinations.both = {destinations: ['py', 'py2']};
}

var routes = [{path: '/api', module: local}, {path: '/qjs', module: local}];
require('qewd').master.start(config, routes);
