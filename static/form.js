// The request form: ask for notification permission when the person starts a request
// (never on page load), so the progress page can call them back from a background tab.
'use strict';
(function () {
  const form = document.getElementById('request-form');
  if (!form) return;
  const button = document.getElementById('start');
  const label = button ? button.textContent : '';
  let sent = false;

  function go() {
    if (button) {
      button.disabled = true;
      button.textContent = button.dataset.busy || button.textContent;
    }
    form.submit();  // does not fire 'submit' again
  }

  form.addEventListener('submit', function (event) {
    event.preventDefault();
    if (sent) return;  // one request per click, however impatient
    sent = true;
    const ask = 'Notification' in window && Notification.permission === 'default';
    if (!ask) { go(); return; }
    // Leaving the page would dismiss the browser's prompt: wait for the answer, but not forever.
    let done = false;
    const finish = function () { if (!done) { done = true; go(); } };
    try {
      const answer = Notification.requestPermission(finish);
      if (answer && typeof answer.then === 'function') answer.then(finish, finish);
    } catch (err) {
      finish();
      return;
    }
    setTimeout(finish, 15000);
  });

  // Back/forward cache: a restored page must be usable again.
  window.addEventListener('pageshow', function (event) {
    if (event.persisted && button) {
      sent = false;
      button.disabled = false;
      button.textContent = label;
    }
  });
})();
