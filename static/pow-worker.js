// AlphaBank built-in captcha (CONTRACT §4), worker side.
//
// Receives {challenge, bits}; tries nonces 0, 1, 2, … and answers {type: "done", nonce} for the
// first decimal nonce such that SHA-256(challenge + ":" + nonce) begins with at least `bits`
// zero bits. Digests come from Web Crypto (crypto.subtle), BATCH at a time, so the promise
// overhead is shared; after each batch it posts {type: "progress", tried}. Any problem is posted
// as {type: "error", message}. Loaded from our own origin only (CSP `worker-src 'self'`).
'use strict';

var BATCH = 256;
var CHALLENGE_LENGTH_MAX = 200;

function leadingZeroBits(bytes) {
  var zeros = 0;
  for (var i = 0; i < bytes.length; i++) {
    var byte = bytes[i];
    if (byte === 0) {
      zeros += 8;
      continue;
    }
    // Math.clz32 counts in 32 bits; a byte has 24 leading zero bits more than that.
    return zeros + Math.clz32(byte) - 24;
  }
  return zeros;
}

async function solve(challenge, bits) {
  var encoder = new TextEncoder();
  var prefix = challenge + ':';
  var pending = new Array(BATCH);
  for (var base = 0; base < Number.MAX_SAFE_INTEGER; base += BATCH) {
    for (var i = 0; i < BATCH; i++) {
      pending[i] = crypto.subtle.digest('SHA-256', encoder.encode(prefix + (base + i)));
    }
    var digests = await Promise.all(pending);
    for (var j = 0; j < BATCH; j++) {
      if (leadingZeroBits(new Uint8Array(digests[j])) >= bits) {
        return { nonce: String(base + j), tried: base + j + 1 };
      }
    }
    self.postMessage({ type: 'progress', tried: base + BATCH });
  }
  throw new Error('no nonce found');
}

self.onmessage = function (event) {
  var data = event.data || {};
  var challenge = data.challenge;
  var bits = data.bits;
  if (typeof challenge !== 'string' || challenge.length === 0 ||
      challenge.length > CHALLENGE_LENGTH_MAX ||
      !(Number.isInteger(bits) && bits >= 1 && bits <= 32)) {
    self.postMessage({ type: 'error', message: 'malformed challenge' });
    return;
  }
  if (!self.crypto || !self.crypto.subtle) {
    self.postMessage({ type: 'error', message: 'Web Crypto is not available (not a secure context?)' });
    return;
  }
  solve(challenge, bits).then(function (found) {
    self.postMessage({ type: 'done', nonce: found.nonce, tried: found.tried });
  }, function (error) {
    self.postMessage({ type: 'error', message: String(error && error.message || error) });
  });
};
