// Application "api" on the QEWD.js micro-service (rest_ms.js): REST routes for a primary,
// dispatched by pathTemplate and method through qewd-router's addMicroServiceHandler.
'use strict';
var router = require('qewd-router');

var routes = {
  '/qjs/users/:id': {
    GET: function(args, finished) {
      finished({id: args.id, user: args.session.username || null, from: 'qewd.js', ok: true});
    }
  },
  '/qjs/login': {
    POST: function(args, finished) {
      var body = args.req.body || {};
      if (body.username !== 'rob' || body.password !== 'secret') {
        return finished({error: 'Invalid login', status: {code: 401}});
      }
      var session = args.session;
      session.username = 'rob';
      session.makeSecret('username');
      session.authenticated = true;
      session.makeSecret('authenticated');
      session.timeout = 1200;
      finished({ok: true});
    }
  },
  '/qjs/crash': {
    ANY: function(args, finished) {
      var nothing = null;
      return nothing.boom;
    }
  }
};

module.exports = {
  handlers: {},
  init: function() {
    router.addMicroServiceHandler(routes, module.exports);
  }
};
