// keyhold web UI: small progressive enhancements. Every screen works without
// this file except reading chosen files (credential CSV, policy JSON) and the
// live refresh of jobs. Served as a file: the Content-Security-Policy allows
// no inline script.
'use strict';
(function () {
  var FINISHED = ['succeeded', 'failed', 'cancelled'];

  // ---- tabs (the key group dialog) ----
  document.querySelectorAll('[role=tablist]').forEach(function (list) {
    var tabs = Array.prototype.slice.call(list.querySelectorAll('[role=tab]'));
    var panelOf = function (tab) { return document.getElementById(tab.getAttribute('aria-controls')); };
    var select = function (tab) {
      tabs.forEach(function (t) {
        var on = t === tab;
        t.setAttribute('aria-selected', on ? 'true' : 'false');
        t.tabIndex = on ? 0 : -1;
        var panel = panelOf(t);
        if (panel) { panel.hidden = !on; }
      });
    };
    tabs.forEach(function (tab, i) {
      tab.addEventListener('click', function () { select(tab); });
      tab.addEventListener('keydown', function (e) {
        var next = e.key === 'ArrowRight' ? i + 1 : e.key === 'ArrowLeft' ? i - 1 : null;
        if (next === null) { return; }
        var target = tabs[(next + tabs.length) % tabs.length];
        select(target);
        target.focus();
      });
    });
    var invalid = tabs.filter(function (t) {
      var p = panelOf(t);
      return p && p.querySelector('[aria-invalid=true]');
    })[0];
    select(invalid || tabs[0]);
    var form = list.closest('form');
    if (form) {
      // A required field on a hidden tab: show its tab so the browser can point at it.
      form.addEventListener('invalid', function (e) {
        var holder = tabs.filter(function (t) { var p = panelOf(t); return p && p.contains(e.target); })[0];
        if (holder) { select(holder); }
      }, true);
    }
  });

  // ---- files read into a field (credential CSV, policy JSON) ----
  document.querySelectorAll('input[type=file][data-fills]').forEach(function (input) {
    var target = document.getElementById(input.getAttribute('data-fills'));
    input.addEventListener('change', function () {
      var file = input.files && input.files[0];
      if (!file || !target) { return; }
      input.pending = file.text().then(function (text) {
        target.value = text;
        target.dispatchEvent(new Event('input'));
        input.pending = null;
      });
    });
  });
  document.querySelectorAll('form').forEach(function (form) {
    form.addEventListener('submit', function (e) {
      var pending = Array.prototype.slice.call(form.querySelectorAll('input[type=file][data-fills]'))
        .map(function (i) { return i.pending; })
        .filter(Boolean);
      if (pending.length === 0) { return; }
      e.preventDefault();
      Promise.all(pending).then(function () { form.submit(); });
    });
  });

  // ---- JSON checked before saving (the policy) ----
  document.querySelectorAll('textarea[data-json]').forEach(function (area) {
    var status = document.getElementById(area.getAttribute('data-json'));
    var check = function () {
      var text = area.value.trim();
      var say = function (message) { if (status) { status.textContent = message; } };
      if (!text) {
        area.setCustomValidity('');
        say('No policy given.');
        return;
      }
      try {
        var value = JSON.parse(text);
        if (typeof value !== 'object' || value === null || Array.isArray(value)) {
          throw new Error('a key policy is a JSON object');
        }
        area.setCustomValidity('');
        area.removeAttribute('aria-invalid');
        say('Valid JSON policy (' + text.length + ' characters); keyhold checks it again when saving.');
      } catch (err) {
        area.setCustomValidity('The policy is not valid JSON: ' + err.message);
        area.setAttribute('aria-invalid', 'true');
        say('Not valid JSON: ' + err.message);
      }
    };
    area.addEventListener('input', check);
    check();
  });

  // ---- context menus: right-click a row, or its Actions button ----
  // A panel is placed fixed beside its button (or the pointer), flipped up
  // near the bottom, so no scroll area clips it. Esc closes the menu and
  // gives the focus back to its button; arrows move between its items.
  var menus = function () { return document.querySelectorAll('details.menu'); };
  var closeMenus = function (except) {
    menus().forEach(function (m) { if (m !== except) { m.open = false; } });
  };
  var items = function (menu) {
    return Array.prototype.slice.call(menu.querySelectorAll('.menu-panel a, .menu-panel button'));
  };
  var place = function (menu, x, y) {
    var panel = menu.querySelector('.menu-panel');
    menu.classList.add('placed');
    var width = panel.offsetWidth, height = panel.offsetHeight;
    var left = Math.max(8, Math.min(x - width, window.innerWidth - width - 8));
    var top = y + height > window.innerHeight - 8 ? Math.max(8, y - height) : y;
    panel.style.left = left + 'px';
    panel.style.top = top + 'px';
  };
  menus().forEach(function (menu) {
    var summary = menu.querySelector('summary');
    summary.addEventListener('click', function () { closeMenus(menu); });
    menu.addEventListener('toggle', function () {
      if (!menu.open) { menu.classList.remove('placed'); return; }
      var panel = menu.querySelector('.menu-panel');
      if (menu.pointer) {
        var at = menu.pointer;
        menu.pointer = null;
        place(menu, at.x + panel.offsetWidth, at.y);
        menu.focusItem = 0;
      } else {
        var rect = summary.getBoundingClientRect();
        // Below the button; above it when there is no room below.
        var y = rect.bottom + 2;
        if (y + panel.offsetHeight > window.innerHeight - 8) { y = rect.top - 2; }
        place(menu, rect.right, y);
      }
      // Opened from the keyboard or the pointer: the item asked for takes
      // the focus now that the panel is shown (not before: a closed
      // panel's items cannot take it).
      if (menu.focusItem !== undefined && menu.focusItem !== null) {
        var wanted = items(menu)[menu.focusItem];
        menu.focusItem = null;
        if (wanted) { wanted.focus(); }
      }
    });
    menu.addEventListener('keydown', function (e) {
      var list = items(menu);
      var at = list.indexOf(document.activeElement);
      if (e.key === 'Escape' && menu.open) {
        e.preventDefault();
        e.stopPropagation();
        menu.open = false;
        summary.focus();
      } else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
        e.preventDefault();
        var step = e.key === 'ArrowDown' ? 1 : -1;
        var next = at < 0 ? (step > 0 ? 0 : list.length - 1) : (at + step + list.length) % list.length;
        if (!menu.open) {
          closeMenus(menu);
          menu.focusItem = next;
          menu.open = true;
        } else if (list[next]) {
          list[next].focus();
        }
      }
    });
  });
  document.addEventListener('contextmenu', function (e) {
    var row = e.target.closest && e.target.closest('tr[data-menu]');
    var menu = row && document.getElementById(row.getAttribute('data-menu'));
    if (!menu) { return; }
    e.preventDefault();
    closeMenus(menu);
    menu.pointer = { x: e.clientX, y: e.clientY };
    if (menu.open) { menu.open = false; }
    menu.open = true;
  });
  document.addEventListener('click', function (e) {
    if (!(e.target.closest && e.target.closest('details.menu'))) { closeMenus(null); }
  });
  document.addEventListener('keydown', function (e) {
    if (e.key === 'Escape') { closeMenus(null); }
  });
  // A placed panel does not follow its button: close it when the page moves.
  window.addEventListener('resize', function () { closeMenus(null); });
  document.addEventListener('scroll', function () { closeMenus(null); }, true);

  // ---- dialogs ----
  // Drawn open by the server (they work without script); made modal here,
  // so the page behind is inert for Tab and pointer, the focus starts
  // inside, and Esc leaves through the dialog's Cancel address.
  document.querySelectorAll('dialog.modal[open]').forEach(function (dialog) {
    if (typeof dialog.showModal !== 'function') { return; }
    dialog.close();
    dialog.showModal();
    var backdrop = dialog.previousElementSibling;
    if (backdrop && backdrop.classList.contains('backdrop')) { backdrop.hidden = true; }
    // The field to fix first; otherwise the first field; where there is
    // none (a confirmation), Cancel, so a stray Enter does nothing costly.
    var start = dialog.querySelector('[autofocus]')
      || dialog.querySelector('input:not([type=hidden]):not([readonly]):not([disabled]), select, textarea')
      || dialog.querySelector('.actions a.secondary')
      || dialog.querySelector('button, a[href]');
    if (start) { start.focus(); }
    dialog.addEventListener('cancel', function (e) {
      e.preventDefault();
      window.location.href = dialog.getAttribute('data-cancel') || '/ui/keys';
    });
  });

  // ---- a second officer joins without losing what was typed ----
  // Going to the login screen from a dialog keeps the dialog's fields (no
  // secrets: the CSRF token, passwords and files are left out) in this
  // tab's session storage and comes back to the dialog after the login.
  var DRAFT = 'keyhold-draft';
  var keptFields = function (form) {
    return Array.prototype.slice.call(form.elements).filter(function (f) {
      return f.name && f.type !== 'hidden' && f.type !== 'password' && f.type !== 'file'
        && f.type !== 'submit' && f.type !== 'button';
    });
  };
  var openDialog = document.querySelector('dialog.modal[data-address]');
  var draftForm = openDialog && openDialog.querySelector('form');
  if (draftForm) {
    var address = openDialog.getAttribute('data-address');
    document.querySelectorAll('a[href="/ui/login"]').forEach(function (link) {
      link.addEventListener('click', function () {
        var values = {};
        keptFields(draftForm).forEach(function (f) {
          values[f.name] = f.type === 'checkbox' ? f.checked : f.value;
        });
        try {
          window.sessionStorage.setItem(DRAFT, JSON.stringify({ address: address, values: values }));
        } catch (ignored) { /* storage refused: the login still works */ }
        link.href = '/ui/login?next=' + encodeURIComponent(address);
      });
    });
    var saved = null;
    try { saved = JSON.parse(window.sessionStorage.getItem(DRAFT) || 'null'); } catch (ignored) { saved = null; }
    if (saved && saved.address === address) {
      window.sessionStorage.removeItem(DRAFT);
      keptFields(draftForm).forEach(function (f) {
        if (!Object.prototype.hasOwnProperty.call(saved.values, f.name) || f.readOnly) { return; }
        if (f.type === 'checkbox') { f.checked = saved.values[f.name] === true; } else { f.value = saved.values[f.name]; }
        f.dispatchEvent(new Event('input'));
      });
    }
  }

  // ---- live jobs ----
  var poll = function (url, render) {
    var tick = function () {
      fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' } })
        .then(function (r) {
          if (r.redirected) { window.location.href = r.url; return null; }
          if (!r.ok) { throw new Error('HTTP ' + r.status); }
          return r.json();
        })
        .then(function (data) {
          if (data === null) { return; }
          var busy = render(data);
          window.setTimeout(tick, busy ? 1000 : 5000);
        })
        .catch(function () { window.setTimeout(tick, 5000); });
    };
    window.setTimeout(tick, 1000);
  };
  var el = function (tag, text, attrs) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    return node;
  };
  var badge = function (status) { return el('span', status, { 'class': 'status-badge', 'data-status': status }); };
  var progress = function (job, into) {
    into.textContent = '';
    var bar = el('progress', null, { max: String(Math.max(job.steps_total, 1)), 'aria-label': 'Progress of job ' + job.id });
    bar.value = job.steps_done;
    into.appendChild(bar);
    into.appendChild(document.createTextNode(' '));
    into.appendChild(el('span', job.steps_done + '/' + job.steps_total, { 'class': 'steps' }));
  };
  var dash = function (v) { return v === null || v === undefined ? '\u2014' : v; };
  // As the server writes times: 2026-11-29 09:00:00 UTC, the exact value in datetime.
  var when = function (raw) {
    if (raw === null || raw === undefined) { return document.createTextNode('\u2014'); }
    var m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})[^Z]*Z$/.exec(raw);
    return el('time', m ? m[1] + ' ' + m[2] + '\u00a0UTC' : raw, { datetime: raw });
  };
  var setTime = function (id, raw) {
    var n = document.getElementById(id);
    if (n) { n.textContent = ''; n.appendChild(when(raw)); }
  };

  var jobsTable = document.getElementById('jobs-table');
  if (jobsTable) {
    poll(jobsTable.getAttribute('data-poll'), function (jobs) {
      var body = jobsTable.querySelector('tbody');
      body.textContent = '';
      if (jobs.length === 0) {
        var empty = el('tr', null, { 'class': 'empty' });
        empty.appendChild(el('td', 'No jobs yet: Force Rotate or Synchronize starts one.', { colspan: '9' }));
        body.appendChild(empty);
      }
      jobs.forEach(function (job) {
        var tr = el('tr', null, { 'data-job': job.id, 'data-status': job.status });
        var link = el('a', job.title, { href: '/ui/jobs/' + encodeURIComponent(job.id) });
        var cell = function (child, cls) {
          var td = el('td', null, cls ? { 'class': cls } : {});
          if (typeof child === 'string') { td.textContent = child; } else { td.appendChild(child); }
          tr.appendChild(td);
          return td;
        };
        var titled = cell(link);
        titled.appendChild(el('br'));
        titled.appendChild(el('small', job.summary, { 'class': 'job-summary' }));
        cell(el('code', job.target));
        cell(job.group);
        cell(badge(job.status), 'status');
        progress(job, cell('', 'progress'));
        cell(dash(job.current_step));
        cell(job.users);
        cell(when(job.created_at), 'time');
        cell(when(job.finished_at), 'time');
        body.appendChild(tr);
      });
      return jobs.some(function (j) { return FINISHED.indexOf(j.status) < 0; });
    });
  }

  var detail = document.getElementById('job-detail');
  if (detail) {
    var set = function (id, value) { var n = document.getElementById(id); if (n) { n.textContent = dash(value); } };
    poll(detail.getAttribute('data-poll'), function (job) {
      var status = document.getElementById('job-status');
      status.textContent = '';
      status.appendChild(badge(job.status));
      progress(job, document.getElementById('job-progress'));
      set('job-step', job.current_step);
      set('job-attempts', job.attempts);
      set('job-kms-key', job.kms_key_id);
      set('job-wrapping', job.wrapping_algorithm);
      setTime('job-finished', job.finished_at);
      set('job-error', job.error);
      // The same rules as the server's can_retry and can_cancel (ui/jobs.rs).
      var retryForm = document.getElementById('retry-form');
      var cancelForm = document.getElementById('cancel-form');
      if (retryForm) { retryForm.hidden = job.status !== 'failed'; }
      if (cancelForm) { cancelForm.hidden = !(job.status === 'failed' || job.status === 'queued'); }
      var list = document.getElementById('job-messages');
      list.textContent = '';
      (job.messages || []).forEach(function (m) {
        var li = el('li');
        li.appendChild(when(m.time));
        li.appendChild(document.createTextNode(' '));
        li.appendChild(el('span', m.text));
        list.appendChild(li);
      });
      return FINISHED.indexOf(job.status) < 0;
    });
  }
})();
