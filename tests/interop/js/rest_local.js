// The QEWD.js primary's own /api module (rest_primary.js): only for paths it does not forward.
module.exports = {
  restModule: true,
  handlers: {
    local: function(messageObj, finished) {
      finished({local: true});
    },
    // bench/rest.py: the same canned answer as the other systems, from a local QEWD.js route
    item: function(messageObj, finished) {
      finished({id: messageObj.path.split('/')[3], ok: true});
    }
  }
};
