"""A stand-in for Synerise's web tracker script, served by FakeSynerise.

``GET /synerise-javascript-sdk.min.js`` answers this script. It defines the part of the
``SR`` object that django-synerise's tracking code uses (``SR.init``,
``SR.client.setAccessToken``, ``SR.jwt.getAccessToken`` / ``clearAccessToken``,
``SR.event.pageVisit``) and records every call in ``window.__syneriseFake`` so browser tests
can assert what the page did. It makes no request of its own.
"""

from __future__ import annotations

__all__ = ["TRACKER_SCRIPT_PATH", "tracker_script"]

#: Path of the tracker script on a tracking domain (Synerise's is ``web.snrbox.com``).
TRACKER_SCRIPT_PATH = "/synerise-javascript-sdk.min.js"

_SCRIPT = """\
(function (w) {
  "use strict";
  var calls = {init: [], tokens: [], cleared: 0, pageVisits: 0, queued: w.SR || null};
  var token = null;
  w.__syneriseFake = calls;
  w.SR = {
    init: function (options) {
      calls.init.push(options);
      return Promise.resolve();
    },
    client: {
      setAccessToken: function (value) { token = value; calls.tokens.push(value); }
    },
    jwt: {
      getAccessToken: function () { return token; },
      clearAccessToken: function () { token = null; calls.cleared += 1; }
    },
    event: {
      pageVisit: function () { calls.pageVisits += 1; return Promise.resolve(); }
    }
  };
})(window);
"""


def tracker_script() -> bytes:
    """Return the stand-in tracker script (UTF-8 JavaScript)."""
    return _SCRIPT.encode("utf-8")
