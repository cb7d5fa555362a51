// The decisions page's live stream: new records arrive in batches, as
// server-sent events, and are added as text, never as markup.
(function () {
  var body = document.getElementById("decisions-body");
  var status = document.getElementById("live-status");
  if (!body || !window.EventSource) return;
  var source = new EventSource("/events" + window.location.search);
  source.onopen = function () {
    if (status) status.textContent = "live";
  };
  source.onerror = function () {
    if (status) status.textContent = "reconnecting";
  };
  source.addEventListener("records", function (event) {
    JSON.parse(event.data).forEach(add);
  });
  function add(r) {
    var row = document.createElement("tr");
    row.className = "live " + r.decision;
    row.setAttribute("data-seq", String(r.seq));
    var cells = [r.seq, r.time, r.agent, r.kind, r.action, r.decision,
      r.policy_ids.join(", "), r.arguments, r.detail || ""];
    cells.forEach(function (text, i) {
      var cell = document.createElement("td");
      if (i === 0) {
        var link = document.createElement("a");
        link.href = "/records/" + encodeURIComponent(String(r.seq));
        link.textContent = String(text);
        cell.appendChild(link);
      } else {
        cell.textContent = String(text);
      }
      row.appendChild(cell);
    });
    body.insertBefore(row, body.firstChild);
    if (status) status.textContent = "live: record " + r.seq;
  }
  // Fell too far behind: the page reloads and reads the log again.
  source.addEventListener("lagged", function () {
    window.location.reload();
  });
})();
