// AlphaBank passkeys (CONTRACT §7), page side. Same origin only (CSP `script-src 'self'`).
//
// Forms with `data-passkey`:
//   "login": asks /login/passkey/options for request options, lets the browser find a passkey,
//            puts the AuthenticationResponseJSON into `credential` and sends the form;
//   "add":   asks /settings/passkeys/options (with the form's code) for creation options, lets the
//            browser create a passkey, puts the RegistrationResponseJSON into `credential`;
//   "sign":  signs the payment with the request options of #passkey-sign (data-options) and puts
//            the AuthenticationResponseJSON into `passkey_assertion`.
(function () {
  'use strict';

  var UNSUPPORTED = 'This browser cannot use passkeys. Use your password and code instead.';
  var CANCELLED = 'No passkey was used. You can try again.';

  function supported() {
    return window.PublicKeyCredential &&
      typeof PublicKeyCredential.parseCreationOptionsFromJSON === 'function' &&
      typeof PublicKeyCredential.parseRequestOptionsFromJSON === 'function';
  }

  function say(form, text) {
    var status = form.querySelector('.passkey-status');
    if (status) {
      status.textContent = text;
    }
  }

  function field(form, name) {
    return form.querySelector('input[name="' + name + '"]');
  }

  function post(url, fields) {
    var body = new URLSearchParams(fields).toString();
    return fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: body
    }).then(function (response) {
      return response.json().catch(function () {
        return { error: 'The bank did not answer. Please try again.' };
      }).then(function (json) {
        if (!response.ok) {
          throw new Error(json.error || 'The bank refused the request.');
        }
        return json;
      });
    });
  }

  function finish(form, name, credential) {
    field(form, name).value = JSON.stringify(credential.toJSON());
    form.setAttribute('data-passkey-done', 'true');
    form.submit();
  }

  function get(options) {
    return navigator.credentials.get({
      publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options)
    });
  }

  var flows = {
    login: function (form) {
      var csrf = field(form, 'csrf_token').value;
      return post('/login/passkey/options', { csrf_token: csrf })
        .then(get)
        .then(function (credential) { finish(form, 'credential', credential); });
    },
    add: function (form) {
      var fields = {
        csrf_token: field(form, 'csrf_token').value,
        otp: field(form, 'otp').value.trim()
      };
      return post('/settings/passkeys/options', fields)
        .then(function (options) {
          return navigator.credentials.create({
            publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options)
          });
        })
        .then(function (credential) { finish(form, 'credential', credential); });
    },
    sign: function (form) {
      var holder = document.getElementById('passkey-sign');
      var options = JSON.parse(holder.getAttribute('data-options'));
      return get(options)
        .then(function (credential) { finish(form, 'passkey_assertion', credential); });
    }
  };

  function start(form) {
    var flow = flows[form.getAttribute('data-passkey')];
    if (!flow) {
      return;
    }
    if (!supported()) {
      say(form, UNSUPPORTED);
      return;
    }
    form.addEventListener('submit', function (event) {
      if (form.getAttribute('data-passkey-done') === 'true') {
        return;
      }
      event.preventDefault();
      say(form, 'Waiting for your passkey\u2026');
      flow(form).catch(function (error) {
        var cancelled = error && (error.name === 'NotAllowedError' || error.name === 'AbortError');
        say(form, cancelled ? CANCELLED : (error && error.message) || CANCELLED);
      });
    });
  }

  function init() {
    Array.prototype.forEach.call(document.querySelectorAll('form[data-passkey]'), start);
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', init);
  } else {
    init();
  }
}());
