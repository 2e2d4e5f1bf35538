/*
  QEWD.js handler module for switch_master.js: "signin" goes on at application "login" on
  destination "py_login".
*/
module.exports = {
  handlers: {
    signin: function(messageObj, session, send, finished) {
      finished({
        type: 'login',
        qewd_destination: 'py_login',
        qewd_application: 'login',
        params: messageObj.params
      });
    }
  }
};
