// What tests/browser read through page.evaluate on the EWD client pages (ewd.html,
// npm-ewd.html): the local events in order, the frames of tracked requests. Loaded after the
// EWD client (it uses EWD.on and EWD.send).
var query = new URLSearchParams(location.search);
var events = [];    // [name, data] of the local events, in order
var results = {};   // key -> every frame a tracked request's callback got

// Record the events ``names``; ``onEvent(name, data)`` is told of each too, if given.
function record(names, onEvent) {
  names.forEach(function (name) {
    EWD.on(name, function (data) {
      events.push([name, data]);
      if (onEvent) onEvent(name, data);
    });
  });
}
function track(key, message) {
  results[key] = [];
  EWD.send(message, function (frame) { results[key].push(frame); });
}
function finalOf(key) {
  return (results[key] || []).filter(function (f) { return f.finished !== false; })[0];
}
function seen(name) {
  return events.filter(function (e) { return e[0] === name; }).length;
}
