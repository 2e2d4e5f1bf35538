/*
  QEWD.js handlers over ewd-document-store for the documents interop test: each one works on
  the node params.name[params.subscripts...] with QEWD's own API (this.documentStore).
*/
function node(worker, params) {
  return new worker.documentStore.DocumentNode(params.name, params.subscripts || []);
}

function benchDoc() {
  var doc = {};
  for (var k = 0; k < 50; k++) doc['field' + k] = 'value ' + k;
  return doc;
}

module.exports = {
  handlers: {
    write: function(messageObj, session, send, finished) {
      var doc = node(this, messageObj.params);
      if (messageObj.params.replace) doc.delete();
      doc.setDocument(messageObj.params.document);
      finished({ok: true});
    },
    setValue: function(messageObj, session, send, finished) {
      node(this, messageObj.params).value = messageObj.params.value;
      finished({ok: true});
    },
    read: function(messageObj, session, send, finished) {
      var doc = node(this, messageObj.params);
      var children = [];
      doc.forEachChild(function(sub) { children.push(sub); });
      finished({
        exists: doc.exists,
        hasValue: doc.hasValue,
        hasChildren: doc.hasChildren,
        value: doc.value,
        children: children,
        document: doc.getDocument(true)
      });
    },
    increment: function(messageObj, session, send, finished) {
      finished({value: node(this, messageObj.params).increment()});
    },
    // bench/documents.py: params.n times one operation, timed inside the worker
    bench: function(messageObj, session, send, finished) {
      var p = messageObj.params;
      var base = node(this, p);
      var n = p.n;
      var leaf = base.$('value');
      var doc = benchDoc();
      var i;
      if (p.op === 'prepare') {
        base.delete();
        for (i = 0; i < 1000; i++) base.$('kids').$('k' + i).value = i;
        base.$('doc').setDocument(doc);
        leaf.value = 'x';
        return finished({ok: true});
      }
      // nodes made before the clock starts, as bench/documents.py's own loops do
      var docNode = base.$('doc'), counter = base.$('counter'), kids = base.$('kids');
      var t0 = process.hrtime.bigint();
      var check = null;  // what the last iteration found (the bench checks it)
      if (p.op === 'set') for (i = 0; i < n; i++) leaf.value = i;
      else if (p.op === 'get') for (i = 0; i < n; i++) leaf.value;
      else if (p.op === 'set_document') for (i = 0; i < n; i++) docNode.setDocument(doc);
      else if (p.op === 'get_document') {
        for (i = 0; i < n; i++) check = Object.keys(docNode.getDocument(true)).length;
      }
      else if (p.op === 'increment') for (i = 0; i < n; i++) counter.increment();
      else if (p.op === 'children') {
        for (i = 0; i < n; i++) {
          var subs = [];
          kids.forEachChild(function(sub) { subs.push(sub); });
          check = subs.length;
        }
      }
      else return finished({error: 'unknown op ' + p.op});
      finished({ns: Number(process.hrtime.bigint() - t0), n: n, check: check});
    },
    // bench/documents.py over WebSocket: params.op once per request, the same work and the
    // same small reply as bench/apps/docs_bench.py on our node
    op: function(messageObj, session, send, finished) {
      var p = messageObj.params;
      var base = node(this, p);
      var r;
      if (p.op === 'set') { base.$('value').value = p.n; r = p.n; }
      else if (p.op === 'get') r = base.$('value').value;
      else if (p.op === 'set_document') { base.$('doc').setDocument(benchDoc()); r = 50; }
      else if (p.op === 'get_document') r = Object.keys(base.$('doc').getDocument(true)).length;
      else if (p.op === 'increment') r = base.$('counter').increment();
      else if (p.op === 'children') {
        var subs = [];
        base.$('kids').forEachChild(function(sub) { subs.push(sub); });
        r = subs.length;
      }
      else return finished({error: 'unknown op ' + p.op});
      finished({r: r});
    },
    // session-token mode: QEWD.js's own view of the session (ewd-session's Session)
    whoami: function(messageObj, session, send, finished) {
      if (messageObj.params && messageObj.params.set) {
        session.data.$('fromJS').value = messageObj.params.set;
      }
      finished({
        id: session.id,
        application: session.application,
        username: session.data.$('username').value,
        record: session.data.$('ewd-session').getDocument(true)
      });
    },
    remove: function(messageObj, session, send, finished) {
      node(this, messageObj.params).delete();
      finished({ok: true});
    }
  }
};
