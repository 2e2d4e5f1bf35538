// The QEWD.js primary's own /api module (rest_primary.js): only for paths it does not forward.
module.exports = {
  restModule: true,
  handlers: {
    local: function(messageObj, finished) {
      finished({local: true});
    }
  }
};
