// breakwater console: what JavaScript adds to pages that work without it.
//
// 1. Confirmations: a form with data-confirm (on the form or on the button
//    that submits it) asks in a dialog, then posts the write at once (without
//    JavaScript the same form opens a confirmation page that posts it).
//    "{selected}" in the message is replaced by the number of ticked boxes.
// 2. Live refresh: every part of a page marked data-live (with an id) is
//    fetched again every few seconds and replaced when it changed, unless the
//    keyboard focus is inside it. A button pauses and resumes it.
(function () {
  "use strict";

  var PERIOD_MS = 2000;

  function confirmation(event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement)) {
      return;
    }
    var button = event.submitter || null;
    var message = (button && button.getAttribute("data-confirm")) || form.getAttribute("data-confirm");
    if (!message) {
      return;
    }
    event.preventDefault();
    if (message.indexOf("{selected}") >= 0) {
      var ticked = form.querySelectorAll('input[type="checkbox"][name="id"]:checked').length;
      if (ticked === 0) {
        window.alert("Tick at least one first.");
        return;
      }
      message = message.replace("{selected}", String(ticked));
    }
    if (!window.confirm(message)) {
      return;
    }
    var action = (button && button.getAttribute("formaction")) || form.getAttribute("action");
    var post = document.createElement("form");
    post.method = "post";
    post.action = action;
    post.hidden = true;
    new FormData(form).forEach(function (value, name) {
      var input = document.createElement("input");
      input.type = "hidden";
      input.name = name;
      input.value = String(value);
      post.appendChild(input);
    });
    document.body.appendChild(post);
    post.submit();
  }

  function live() {
    var control = document.getElementById("live-control");
    if (!control || !document.querySelector("[data-live]")) {
      return;
    }
    var paused = false;
    var timer = null;
    var button = document.createElement("button");
    button.type = "button";
    button.id = "live-toggle";
    function label() {
      button.textContent = paused ? "Resume live updates" : "Pause live updates";
      button.setAttribute("aria-pressed", paused ? "true" : "false");
    }
    function schedule() {
      window.clearTimeout(timer);
      if (!paused) {
        timer = window.setTimeout(tick, PERIOD_MS);
      }
    }
    function tick() {
      if (paused || document.hidden) {
        schedule();
        return;
      }
      window.fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (!response.ok || response.redirected) {
            throw new Error("live updates stopped: " + response.status);
          }
          return response.text();
        })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html");
          document.querySelectorAll("[data-live][id]").forEach(function (region) {
            var next = fresh.getElementById(region.id);
            if (!next || region.contains(document.activeElement)) {
              return;
            }
            if (next.innerHTML !== region.innerHTML) {
              region.replaceWith(document.importNode(next, true));
            }
          });
          document.documentElement.setAttribute("data-refreshed", String(Date.now()));
          schedule();
        })
        .catch(function () {
          paused = true;
          label();
        });
    }
    button.addEventListener("click", function () {
      paused = !paused;
      label();
      if (!paused) {
        tick();
      }
    });
    label();
    control.appendChild(button);
    control.hidden = false;
    schedule();
  }

  document.addEventListener("submit", confirmation);
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", live);
  } else {
    live();
  }
})();
