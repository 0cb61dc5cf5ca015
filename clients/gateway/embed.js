/* funnel-gateway embed script, served as GET /forms/{id}.js and called
 * with the form's settings {form, message}.  For each <form> that posts
 * to this form (action ending in /forms/{id}, or data-funnel-form="{id}"):
 *  - adds a hidden submission_id (one per page view and form), so a
 *    double click, a retry or a fall-back post is stored once;
 *  - adds page_url and referrer (the page's own URL, UTM query included);
 *  - submits with fetch, shows the form's message in place of the form;
 *  - on a network failure falls back to the plain post (same id).
 * Without JavaScript the form posts as it is and the gateway redirects
 * to the form's thank-you page. */
(function (cfg) {
	"use strict";
	var script = document.currentScript;
	var base = script && script.src ? new URL(script.src).origin : "";
	var path = "/forms/" + cfg.form;

	function newId() {
		var b = new Uint8Array(16);
		(window.crypto || window.msCrypto).getRandomValues(b);
		return Array.prototype.map.call(b, function (x) {
			return ("0" + x.toString(16)).slice(-2);
		}).join("");
	}

	function hidden(form, name, value) {
		var el = form.querySelector('input[name="' + name + '"]');
		if (!el) {
			el = document.createElement("input");
			el.type = "hidden";
			el.name = name;
			form.appendChild(el);
		}
		if (!el.value)
			el.value = value;
		return el;
	}

	function show(form, text, isError) {
		var p = form.querySelector(".funnel-message");
		if (!p) {
			p = document.createElement("p");
			p.className = "funnel-message";
			p.setAttribute("role", "status");
			form.parentNode.insertBefore(p, form.nextSibling);
		}
		p.textContent = text;
		if (!isError)
			form.style.display = "none";
	}

	function attach(form) {
		if (form.__funnel)
			return;
		form.__funnel = true;
		if (!form.getAttribute("action"))
			form.setAttribute("action", base + path);
		hidden(form, "submission_id", newId());
		hidden(form, "page_url", location.href);
		hidden(form, "referrer", document.referrer || "");
		var busy = false, done = false;
		form.addEventListener("submit", function (e) {
			e.preventDefault();
			if (busy || done)
				return;       /* a double click sends once */
			busy = true;
			fetch(form.action, {
				method: "POST",
				body: new FormData(form),
				headers: { "Accept": "application/json" },
				credentials: "omit"
			}).then(function (r) {
				return r.json().then(function (j) {
					busy = false;
					if (r.ok) {
						done = true;
						show(form, j.message || cfg.message, false);
					} else {
						show(form, j.error || ("error " + r.status), true);
					}
				});
			}).catch(function () {
				/* the gateway is not reachable from script: post the plain way */
				done = true;
				HTMLFormElement.prototype.submit.call(form);
			});
		});
	}

	function scan() {
		var forms = document.getElementsByTagName("form");
		for (var i = 0; i < forms.length; i++) {
			var f = forms[i], a = f.getAttribute("action") || "";
			if (f.getAttribute("data-funnel-form") === cfg.form ||
			    a.slice(-path.length) === path)
				attach(f);
		}
	}

	if (document.readyState === "loading")
		document.addEventListener("DOMContentLoaded", scan);
	else
		scan();
});
