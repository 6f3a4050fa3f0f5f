/* Login page: the identity providers' own SDK buttons (only when their client ids are set).
   Each SDK hands the browser a provider token, which is posted to django-synerise's
   /synerise/auth/login/<provider>/ endpoint; Synerise checks it and the session starts. */
(function () {
  "use strict";
  var box = document.getElementById("providers");
  if (!box) { return; }
  var errorBox = document.getElementById("provider-error");
  var csrfInput = document.querySelector("input[name=csrfmiddlewaretoken]");

  function showError(text) {
    errorBox.textContent = text;
    errorBox.classList.remove("hidden");
  }

  function postToken(provider, token) {
    var url = box.dataset.loginUrl.replace("PROVIDER", provider);
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfInput ? csrfInput.value : "" },
      body: JSON.stringify({ identity_provider_token: token })
    }).then(function (r) {
      if (r.ok) { window.location.assign(box.dataset.next); return; }
      return r.json().catch(function () { return {}; }).then(function (body) {
        showError("Sign-in failed: " + (body.detail || r.status));
      });
    }).catch(function () { showError("Sign-in failed: the site is not reachable."); });
  }

  /* SDK buttons are rendered disabled; they are enabled only once their click handler is
     attached, so a click before the SDK has loaded is never silently lost. */
  function ready(button) {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }

  function whenLoaded(globalName, callback, tries) {
    tries = tries || 0;
    if (window[globalName]) { callback(window[globalName]); return; }
    if (tries > 100) { showError(globalName + " SDK did not load."); return; }
    setTimeout(function () { whenLoaded(globalName, callback, tries + 1); }, 100);
  }

  var google = box.querySelector("[data-provider=google]");
  if (google) {
    whenLoaded("google", function (g) {
      g.accounts.id.initialize({
        client_id: google.dataset.clientId,
        callback: function (response) { postToken("google", response.credential); }
      });
      g.accounts.id.renderButton(document.getElementById("google-signin"),
        { theme: "outline", size: "large", width: 320, text: "signin_with" });
    });
  }

  var apple = box.querySelector("[data-provider=apple]");
  if (apple) {
    whenLoaded("AppleID", function (AppleID) {
      AppleID.auth.init({
        clientId: apple.dataset.clientId, scope: "name email",
        redirectURI: apple.dataset.redirectUri, usePopup: true
      });
      apple.addEventListener("click", function () {
        AppleID.auth.signIn().then(function (response) {
          postToken("apple", response.authorization.id_token);
        }).catch(function () { showError("Apple sign-in was cancelled."); });
      });
      ready(apple);
    });
  }

  var facebook = box.querySelector("[data-provider=facebook]");
  if (facebook) {
    whenLoaded("FB", function (FB) {
      FB.init({ appId: facebook.dataset.clientId, version: "v19.0", cookie: false, xfbml: false });
      facebook.addEventListener("click", function () {
        FB.login(function (response) {
          if (response.authResponse) { postToken("facebook", response.authResponse.accessToken); }
          else { showError("Facebook sign-in was cancelled."); }
        }, { scope: "email" });
      });
      ready(facebook);
    });
  }
})();
