/*
  QEWD.js handlers over ewd-document-store for the documents interop test: each one works on
  the node params.name[params.subscripts...] with QEWD's own API (this.documentStore).
*/
function node(worker, params) {
  return new worker.documentStore.DocumentNode(params.name, params.subscripts || []);
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
    remove: function(messageObj, session, send, finished) {
      node(this, messageObj.params).delete();
      finished({ok: true});
    }
  }
};
