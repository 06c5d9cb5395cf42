// AlphaBank built-in captcha (CONTRACT §4), page side.
//
// For every form with a `pow_challenge` input: disable its submit buttons while a Web Worker
// (/static/pow-worker.js) searches for a decimal nonce such that
// SHA-256(challenge + ":" + nonce) starts with `data-bits` zero bits, then put the nonce in
// `pow_nonce` and give the buttons back. The search starts when the page loads, so it is usually
// done before the form is filled in. No inline script and no third-party code: this file and the
// worker are served from our own origin (CSP `script-src 'self'; worker-src 'self'`).
(function () {
  'use strict';

  var WORKER_URL = '/static/pow-worker.js?v=1';
  var WORKING = 'Checking your browser\u2026';
  var DONE = 'Security check complete.';
  var FAILED = 'The security check could not run in this browser. ' +
    'You can still send the form; if it is refused, reload the page or try another browser.';
  var PROGRESS_INTERVAL_MS = 2000;

  function submitButtons(form) {
    return Array.prototype.slice.call(form.querySelectorAll(
      'button[type="submit"], button:not([type]), input[type="submit"]'));
  }

  function labelOf(button) {
    return button.tagName === 'INPUT' ? button.value : button.textContent;
  }

  function setLabel(button, text) {
    if (button.tagName === 'INPUT') {
      button.value = text;
    } else {
      button.textContent = text;
    }
  }

  function start(form) {
    if (form.getAttribute('data-pow') !== null) {
      return; // already started (the partial may be included more than once)
    }
    form.setAttribute('data-pow', 'running');
    var challengeInput = form.querySelector('input[name="pow_challenge"]');
    var nonceInput = form.querySelector('input[name="pow_nonce"]');
    var status = form.querySelector('.pow-status');
    var bits = parseInt(challengeInput.getAttribute('data-bits'), 10);
    var buttons = submitButtons(form);
    var finished = false;
    var worker = null;

    function say(text) {
      if (status) {
        status.textContent = text;
      }
    }

    function release(message, state) {
      finished = true;
      form.setAttribute('data-pow', state);
      buttons.forEach(function (button) {
        setLabel(button, button.getAttribute('data-pow-label') || labelOf(button));
        button.disabled = false;
      });
      say(message);
      if (worker) {
        worker.terminate();
        worker = null;
      }
    }

    if (!nonceInput || !challengeInput.value || !(bits >= 1 && bits <= 32)) {
      return;
    }
    if (nonceInput.value) {
      form.setAttribute('data-pow', 'done');
      return; // solved before (for example, restored from the history cache)
    }

    buttons.forEach(function (button) {
      button.setAttribute('data-pow-label', labelOf(button));
      setLabel(button, WORKING);
      button.disabled = true;
    });
    say(WORKING);

    // Enter in a text field must not send the form before the nonce is there.
    form.addEventListener('submit', function (event) {
      if (!finished) {
        event.preventDefault();
        say(WORKING + ' Please wait a moment.');
      }
    });

    if (typeof Worker === 'undefined') {
      release(FAILED, 'failed');
      return;
    }
    try {
      worker = new Worker(WORKER_URL);
    } catch (error) {
      release(FAILED, 'failed');
      return;
    }
    var expected = Math.pow(2, bits);
    var lastShown = Date.now();
    worker.onmessage = function (event) {
      var data = event.data || {};
      if (finished) {
        return;
      }
      if (data.type === 'progress') {
        var now = Date.now();
        if (now - lastShown >= PROGRESS_INTERVAL_MS) {
          lastShown = now;
          var percent = Math.min(99, Math.floor(100 * data.tried / expected));
          say(WORKING + ' ' + percent + '%');
        }
      } else if (data.type === 'done' && typeof data.nonce === 'string' && /^[0-9]{1,20}$/.test(data.nonce)) {
        nonceInput.value = data.nonce;
        release(DONE, 'done');
      } else {
        release(FAILED, 'failed');
      }
    };
    worker.onerror = function () {
      if (!finished) {
        release(FAILED, 'failed');
      }
    };
    worker.postMessage({ challenge: challengeInput.value, bits: bits });
  }

  function startAll() {
    var inputs = document.querySelectorAll('input[name="pow_challenge"]');
    Array.prototype.forEach.call(inputs, function (input) {
      if (input.form) {
        start(input.form);
      }
    });
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', startAll);
  } else {
    startAll();
  }
})();
