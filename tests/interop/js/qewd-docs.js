/*
  A QEWD.js node of our own for the documents interop test (tests/interop/test_documents.py):
  the peer kit's installed qewd (found through NODE_PATH), the kit's Redis (QEWD_REDIS_PORT),
  application "docs" (docs-app.js beside this file), on 127.0.0.1:QEWD_DOCS_PORT.
  Started from the peer's run folder, so '../loopback-only' style helpers resolve there.
*/
var path = require('path');
require(path.join(process.cwd(), 'loopback-only'));

var PORT = parseInt(process.env.QEWD_DOCS_PORT || '13080', 10);
var REDIS_PORT = parseInt(process.env.QEWD_REDIS_PORT || '16379', 10);

var config = {
  managementPassword: 'keepThisSecret!',
  serverName: 'QEWD.js documents interop node',
  port: PORT,
  poolSize: 1,
  database: {
    type: 'redis',
    params: {host: '127.0.0.1', port: REDIS_PORT}
  },
  sessionDocumentName: 'qewdDocsInteropSession',
  moduleMap: {docs: path.join(__dirname, 'docs-app.js')},
  jwt: {secret: 'someSecret123'}
};

require('qewd').master.start(config);
