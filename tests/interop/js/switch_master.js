/*
  A QEWD.js master whose local application "portal" switches to application "login" on
  another node (QEWD.js 2.46.10's application switch, docs/protocol.md §4.7): destination
  "py_login" is QEWD_SWITCH_URL, registered as application "login". Run by
  tests/interop/test_parity_interop.py with cwd = the peer's run folder and NODE_PATH = its
  node_modules (for require('qewd')).
*/
require(require('path').join(process.cwd(), 'loopback-only'));
var path = require('path');

var PORT = parseInt(process.env.QEWD_MASTER_PORT, 10);
var REDIS_PORT = parseInt(process.env.QEWD_REDIS_PORT || '16379', 10);

var config = {
  managementPassword: 'keepThisSecret!',
  serverName: 'QEWD.js switching master',
  port: PORT,
  poolSize: 1,
  database: {type: 'redis', params: {host: '127.0.0.1', port: REDIS_PORT}},
  sessionDocumentName: 'qewdSwitchMaster',
  moduleMap: {portal: path.join(__dirname, 'switch_portal.js')},
  jwt: {secret: 'someSecret123'},
  u_services: {
    destinations: {py_login: {host: process.env.QEWD_SWITCH_URL, application: 'login'}},
    routes: []
  },
  permit_application_switch: {portal: {login: true}}
};

require('qewd').master.start(config);
