// The progress page, live: a WebSocket first (DESIGN.md frames), then Server-Sent Events
// where sockets do not get through, polling the JSON API whenever neither is there, so the
// person never has to reload; each is tried in turn and retried. Sockets and streams resume
// from the last seq the page has (?since= / Last-Event-ID), so the timeline shows every step's
// message, also what happened while the connection was away. The server rendered the first
// state; this script re-renders from every record it receives with the same rules
// (server/domain/display.py) and the strings the server handed over in #page-data.
'use strict';
(function () {
  const dataEl = document.getElementById('page-data');
  if (!dataEl) return;
  const D = JSON.parse(dataEl.textContent);
  const UI = D.ui;
  const MESSAGES = D.messages;
  const $ = function (id) { return document.getElementById(id); };

  const TERMINAL = { completed: true, failed: true, cancelled: true };
  // What a prompt already says: not repeated as the message (display.QUIET_IN_OTP).
  const QUIET_IN_OTP = {
    otp: true, otp_wrong: true, input_captcha: true, input_choice: true, input_confirm: true,
    input_text: true, input_wrong: true,
  };
  const WAITING = { waiting_otp: true, waiting_input: true };
  const CHOICE_BUTTONS = 6;      // display.CHOICE_BUTTONS: more options are a select
  const POLL_MS = 5000;          // the steady polling interval
  const POLL_FAST_MS = 1000;     // right after an action, while its answer is on its way
  const POLL_MAX_MS = 30000;     // backoff ceiling when polls fail
  const WS_MAX_MS = 30000;       // backoff ceiling for reconnecting the socket
  const HEARTBEAT_MS = D.heartbeat_ms || 12500;   // the server's visits to its sockets and streams
  const PING_MS = 2 * HEARTBEAT_MS;
  const SILENCE_MS = 10000;      // no frame this long after a ping or an action: the socket is dead
  const STREAM_WAIT_MS = 8000;   // an event stream not open by then is given up for polling
  const TIMELINE_MAX = 100;      // entries kept (as many as the server's log of changes)

  const clockOffset = Date.now() - D.server_now;
  function serverNow() { return Date.now() - clockOffset; }

  // ------------------------------------------------------------------ formatting

  const FA_DIGITS = '۰۱۲۳۴۵۶۷۸۹';
  const AR_DIGITS = '٠١٢٣٤٥٦٧٨٩';
  function digits(value) {
    const s = String(value);
    return D.lang === 'fa' ? s.replace(/[0-9]/g, function (d) { return FA_DIGITS[d]; }) : s;
  }
  // What the person typed, as the server reads it: Persian and Arabic digits as 0-9, trimmed.
  function typed(value) {
    return String(value).replace(/[۰-۹٠-٩]/g, function (d) {
      const i = FA_DIGITS.indexOf(d);
      return String(i >= 0 ? i : AR_DIGITS.indexOf(d));
    }).trim();
  }
  // A text prompt's pattern, checked on what the server will check (a pattern this browser
  // cannot compile is left to the server).
  function fitsPattern(pattern, value) {
    if (typeof pattern !== 'string' || !pattern) return true;
    try { return new RegExp('^(?:' + pattern + ')$', 'u').test(value); } catch (err) { return true; }
  }
  function fill(template, params, isolate) {
    return template.replace(/\{(\w+)\}/g, function (m, k) {
      if (!params || params[k] === undefined || params[k] === null) return m;
      let v = typeof params[k] === 'number' ? digits(params[k]) : String(params[k]);
      if (isolate) v = '\u2068' + v + '\u2069';
      return v;
    });
  }
  function t(key, params) { return fill(UI[key] || key, params, false); }
  function clock(seconds) {
    const s = Math.max(0, Math.round(seconds));
    return digits(Math.floor(s / 60) + ':' + String(s % 60).padStart(2, '0'));
  }
  function percent(n) { return D.lang === 'fa' ? digits(n) + '٪' : n + '%'; }

  // Which of our messages the record's text is, and that text in the page's language
  // (the same rules as views.message_key / views.message_text).
  function paramsOf(r) { return r.message_params && typeof r.message_params === 'object' ? r.message_params : {}; }
  function messageKey(r) {
    const pair = r.message_key && MESSAGES[r.message_key];
    if (pair && fill(pair[0], paramsOf(r), false) === r.current_message) return r.message_key;
    for (const key in MESSAGES) {
      if (MESSAGES[key][0] === r.current_message && MESSAGES[key][0].indexOf('{') < 0) return key;
    }
    return null;
  }
  // An error in our own words (one of the messages) in the page's language (views.progress_view).
  // A failure reason in the reader's language: the English text of a keyed message, or one
  // with the bot's own words in it ("… {error}"), matched back to its key (as display.py does).
  function errorText(r) {
    const error = typeof r.error === 'string' ? r.error : '';
    for (const key in MESSAGES) {
      const english = MESSAGES[key][0];
      if (english === error && english.indexOf('{') < 0) return MESSAGES[key][1];
      if (english.indexOf('{') < 0) continue;
      const names = [];
      const pattern = english.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{(\w+)\}/g, function (m, k) {
        names.push(k);
        return '([\\s\\S]*)';
      });
      const found = new RegExp('^' + pattern + '$').exec(error);
      if (!found) continue;
      const params = {};
      names.forEach(function (k, i) { params[k] = found[i + 1]; });
      return fill(MESSAGES[key][1], params, D.lang === 'fa');
    }
    return error;
  }
  function messageText(r) {
    const key = messageKey(r);
    if (key) return fill(MESSAGES[key][1], paramsOf(r), D.lang === 'fa');
    const current = typeof r.current_message === 'string' ? r.current_message : '';
    if (D.lang === 'fa' && current && !/[\u0600-\u06FF]/.test(current)) {
      // A bot's English on a Persian page: say which step it is at instead.
      const step = D.steps.filter(function (s) { return s.name === r.step; })[0];
      return step ? step.label + '…' : '';
    }
    return current;
  }

  // ------------------------------------------------------------------ elements

  const el = {
    live: $('live'), headline: $('headline'), message: $('message'),
    bar: $('bar'), fill: $('bar-fill'), pct: $('pct'), etaWrap: $('eta-wrap'), eta: $('eta'),
    etaLabel: $('eta-label'), notice: $('notice'), conn: $('conn'), connText: $('conn-text'),
    otp: $('otp'), otpForm: $('otp-form'), otpInput: $('otp-input'), otpSubmit: $('otp-submit'),
    otpError: $('otp-error'), otpAttempts: $('otp-attempts'), otpDest: $('otp-dest'),
    resendForm: $('resend-form'), resend: $('resend'), resendWait: $('resend-wait'),
    failed: $('failed'), errorText: $('error-text'), cancelled: $('cancelled'), expired: $('expired'),
    steps: $('steps'), foot: $('live-foot'), cancel: $('cancel'), cancelForm: $('cancel-form'),
    favicon: $('favicon'), timeline: $('timeline'), timelineWrap: $('timeline-wrap'),
    prompt: $('prompt'), promptTitle: $('prompt-title'), promptLabel: $('prompt-label'),
    promptForm: $('prompt-form'), promptId: $('prompt-id'), promptFields: $('prompt-fields'),
    promptError: $('prompt-error'), promptAttempts: $('prompt-attempts'),
  };
  const baseTitle = document.title;
  const baseIcon = el.favicon ? el.favicon.getAttribute('href') : null;
  const alertIcon = D.favicon_alert || null;
  const otpLabel = el.otpSubmit ? el.otpSubmit.textContent : '';

  // ------------------------------------------------------------------ state

  let record = null;
  let lastSeq = -1;
  let streamSeq = -1;       // the last seq a socket or stream delivered (or the page came with):
                            // they resume from it, so polled states leave no hole in the timeline
  let finished = false;     // terminal or gone: stop all traffic
  let eta = null;           // {value: seconds at `at`, at: server ms, frozen: bool}
  let resendAt = 0;         // server ms when a new code may be asked for
  let sending = null;       // the action in flight ('otp', 'resend_otp', 'cancel')
  let sendingSeq = 0;       // the record's seq when it was sent: anything newer answers it
  let resultPending = false;

  // ------------------------------------------------------------------ rendering

  function show(node, visible) { if (node) node.hidden = !visible; }

  function setNotice(text, isError) {
    if (!el.notice) return;
    el.notice.textContent = text || '';
    el.notice.classList.toggle('banner-error', !!isError);
    show(el.notice, !!text);
  }

  function renderSteps(r) {
    if (!el.steps) return;
    const items = el.steps.querySelectorAll('li[data-step]');
    const names = Array.prototype.map.call(items, function (li) { return li.dataset.step; });
    const index = names.indexOf(r.step);
    const offsets = r.steps && typeof r.steps === 'object' ? r.steps : {};
    items.forEach(function (li, i) {
      let state;
      if (r.status === 'completed') state = 'done';
      else if (r.status === 'pending' || index < 0 || i > index) state = 'todo';
      else if (i < index) state = 'done';
      else if (r.status === 'failed') state = 'failed';
      else if (r.status === 'cancelled') state = 'stopped';
      else state = 'current';
      li.className = 'step step-' + state;
      if (state === 'current') li.setAttribute('aria-current', 'step'); else li.removeAttribute('aria-current');
      const at = li.querySelector('.step-at');
      const offset = offsets[li.dataset.step];
      if (at) at.textContent = typeof offset === 'number' && state !== 'todo' ? clock(offset) : '';
    });
  }

  function renderOtp(r) {
    const waiting = r.status === 'waiting_otp';
    show(el.otp, waiting);
    if (!waiting || !el.otpInput) return;
    const od = r.otp_data && typeof r.otp_data === 'object' ? r.otp_data : {};
    const length = Number.isInteger(od.length) && od.length >= 4 && od.length <= 10 ? od.length : 6;
    el.otpInput.maxLength = length;
    el.otpInput.pattern = '[0-9۰-۹]{' + length + '}';
    el.otpInput.placeholder = '•'.repeat(length);
    if (el.otpDest) el.otpDest.textContent = od.destination_hint || '';
    if (el.otpAttempts) {
      const left = od.attempts_left;
      el.otpAttempts.textContent = Number.isInteger(left) ? (left === 1 ? t('attempts_one') : t('attempts_other', { n: left })) : '';
    }
    const wrong = !!od.error || r.message_key === 'otp_wrong';
    if (wrong) {
      otpError(D.lang === 'en' && typeof od.error === 'string' && od.error ? od.error : t('otp_wrong'));
    } else {
      otpError('');
    }
    resendAt = Date.parse(od.resend_available_at || '') || 0;
    tick();
  }

  // ------------------------------------------------------------------ the other prompts

  // The prompt the person is answering (input_request), unless it is the code.
  function promptOf(r) {
    const p = r.input_request;
    if (r.status !== 'waiting_input' || !p || typeof p !== 'object' || p.kind === 'code') return null;
    return p;
  }
  let shownPrompt = '';         // id|kind|picture of the prompt whose fields are on the page

  function node(tag, attrs, text) {
    const n = document.createElement(tag);
    for (const k in attrs || {}) {
      if (attrs[k] !== null && attrs[k] !== undefined && attrs[k] !== false) n.setAttribute(k, attrs[k] === true ? '' : attrs[k]);
    }
    if (text !== undefined) n.textContent = text;
    return n;
  }

  // The same fields templates/progress.html renders for each kind.
  function buildFields(p) {
    const box = el.promptFields;
    box.textContent = '';
    const described = 'prompt-error prompt-attempts';
    const submit = function () {
      return node('button', { type: 'submit', class: 'button button-primary', id: 'prompt-submit' }, t('input_submit'));
    };
    const row = node('div', { class: 'otp-row' });
    if (p.kind === 'captcha') {
      box.appendChild(node('img', {
        class: 'captcha', id: 'captcha-img', src: typeof p.image === 'string' && p.image.indexOf('data:image/png;base64,') === 0 ? p.image : '',
        alt: t('captcha_alt', { n: Number.isInteger(p.length) ? p.length : '' }), width: 220, height: 80,
      }));
      box.appendChild(node('label', { for: 'prompt-input' }, t('captcha_label')));
      row.appendChild(node('input', {
        id: 'prompt-input', name: 'value', type: 'text', class: 'otp-input captcha-input', dir: 'ltr', autocomplete: 'off',
        autocapitalize: 'characters', spellcheck: 'false', maxlength: Number.isInteger(p.length) ? p.length : 32,
        required: true, 'aria-describedby': described,
      }));
      row.appendChild(submit());
      box.appendChild(row);
    } else if (p.kind === 'text') {
      box.appendChild(node('label', { for: 'prompt-input' }, t('input_label')));
      row.appendChild(node('input', {
        id: 'prompt-input', name: 'value', type: p.secret ? 'password' : 'text', class: 'text-input', dir: 'auto',
        autocomplete: 'off', maxlength: p.max_length || 500, required: true,
        'aria-describedby': described,
      }));
      row.appendChild(submit());
      box.appendChild(row);
    } else if (p.kind === 'choice' && (p.options || []).length > CHOICE_BUTTONS) {
      box.appendChild(node('label', { for: 'prompt-input' }, t('input_label')));
      const select = node('select', { id: 'prompt-input', name: 'value', required: true, 'aria-describedby': described });
      select.appendChild(node('option', { value: '' }, t('choose_option')));
      p.options.forEach(function (o) { select.appendChild(node('option', { value: o.value }, o.label)); });
      row.appendChild(select);
      row.appendChild(submit());
      box.appendChild(row);
    } else {
      const group = node('div', { class: 'choices', role: 'group', 'aria-labelledby': 'prompt-title', 'aria-describedby': described });
      const options = p.kind === 'confirm'
        ? [{ value: 'yes', label: t('confirm_yes'), primary: true }, { value: 'no', label: t('confirm_no') }]
        : (p.options || []);
      options.forEach(function (o) {
        const b = node('button', { type: 'submit', class: 'button choice' + (o.primary ? ' button-primary' : ''), name: 'value', value: o.value });
        b.appendChild(node('bdi', {}, o.label));
        group.appendChild(b);
      });
      box.appendChild(group);
    }
  }

  function renderPrompt(r) {
    const p = promptOf(r);
    show(el.prompt, !!p);
    if (!p || !el.prompt) return;
    const key = p.id + '|' + p.kind + '|' + (p.image || '').length + (p.image || '').slice(-24);
    if (key !== shownPrompt) {
      shownPrompt = key;
      el.prompt.dataset.kind = p.kind;
      el.prompt.dataset.id = p.id;
      el.promptId.value = p.id;
      el.promptTitle.textContent = t('input_title_' + p.kind);
      buildFields(p);
    }
    // The bot's question in its own words, whatever the page's language (as display.py says).
    const label = typeof p.label === 'string' ? p.label : '';
    el.promptLabel.textContent = label;
    show(el.promptLabel, !!label);
    // A choice or a yes/no is not guessed at: its tries are not worth a line.
    const left = p.kind === 'captcha' || p.kind === 'text' ? p.attempts_left : null;
    el.promptAttempts.textContent = Number.isInteger(left) ? (left === 1 ? t('attempts_one') : t('attempts_other', { n: left })) : '';
    const wrong = !!p.error || r.message_key === 'input_wrong';
    promptError(wrong ? (D.lang === 'en' && typeof p.error === 'string' && p.error ? p.error : t('input_wrong')) : '');
    setPromptBusy(sending === 'input');
  }

  function promptField() { return el.promptFields ? el.promptFields.querySelector('#prompt-input') : null; }

  function promptError(text) {
    if (!el.promptError) return;
    el.promptError.textContent = text;
    show(el.promptError, !!text);
    const field = promptField();
    if (field) {
      if (text) field.setAttribute('aria-invalid', 'true'); else field.removeAttribute('aria-invalid');
    }
  }

  function setPromptBusy(busy) {
    if (!el.promptFields) return;
    el.promptFields.querySelectorAll('button').forEach(function (b) {
      b.disabled = busy;
      if (b.id === 'prompt-submit') b.textContent = busy ? t('sending') : t('input_submit');
    });
  }

  function focusPrompt() {
    if (!el.promptFields || document.hidden) return;
    // A field takes the focus; buttons do not (a focused option looks chosen): the title does.
    const field = promptField();
    if (field) field.focus({ preventScroll: false });
    else if (el.promptTitle) el.promptTitle.focus({ preventScroll: false });
  }

  function otpError(text) {
    if (!el.otpError) return;
    el.otpError.textContent = text;
    show(el.otpError, !!text);
    if (el.otpInput) {
      if (text) el.otpInput.setAttribute('aria-invalid', 'true'); else el.otpInput.removeAttribute('aria-invalid');
    }
  }

  function render(r, previous) {
    const status = r.status in TERMINAL || r.status in WAITING || r.status === 'pending' ? r.status : 'processing';
    const progress = status === 'completed' ? 100 : Math.max(0, Math.min(100, Math.round(Number(r.progress) || 0)));
    el.live.dataset.status = status;
    el.headline.textContent = t('status_' + status);
    el.message.textContent = messageText(r);
    // The headline or the code prompt already says these.
    show(el.message, !(status in TERMINAL) && !(status in WAITING && QUIET_IN_OTP[messageKey(r)]));
    el.bar.setAttribute('aria-valuenow', String(progress));
    el.bar.setAttribute('aria-valuetext', percent(progress));
    el.fill.className = 'bar-fill p-' + progress;
    el.pct.textContent = percent(progress);

    const remaining = Number(r.estimated_remaining_time);
    if (status in TERMINAL) {
      eta = null;
    } else {
      const at = Math.min(serverNow(), Date.parse(r.updated_at || '') || serverNow());
      eta = { value: isFinite(remaining) ? remaining : 0, at: at, frozen: status in WAITING, paused: status === 'waiting_input' ? 'paused_input' : 'paused' };
    }
    renderSteps(r);
    renderOtp(r);
    renderPrompt(r);

    show(el.failed, status === 'failed');
    if (status === 'failed' && el.errorText) el.errorText.textContent = errorText(r);
    show(el.cancelled, status === 'cancelled');
    show(el.foot, !(status in TERMINAL));
    if (!sending) resetOtpButton();
    tick();
  }

  function resetOtpButton() {
    if (el.otpSubmit) { el.otpSubmit.disabled = false; el.otpSubmit.textContent = otpLabel; }
    setPromptBusy(false);
  }

  // Once a second: the time left counts down between updates, the resend button counts down too.
  function tick() {
    if (el.etaWrap) {
      if (!eta) {
        show(el.etaWrap, false);
      } else if (eta.frozen) {
        show(el.etaWrap, true);
        show(el.etaLabel, false);
        el.eta.textContent = t(eta.paused);
      } else {
        const left = eta.value - (serverNow() - eta.at) / 1000;
        show(el.etaWrap, true);
        show(el.etaLabel, true);
        el.eta.textContent = left >= 1 ? clock(left) : t('almost_done');
      }
    }
    if (el.resend && record && record.status === 'waiting_otp') {
      const wait = (resendAt - serverNow()) / 1000;
      const blocked = wait >= 1 || sending === 'resend_otp';
      el.resend.disabled = blocked;
      if (el.resendWait) el.resendWait.textContent = wait >= 1 ? t('resend_in', { time: clock(wait) }) : '';
    }
  }

  // ------------------------------------------------------------------ calling the person back

  function callBack(kind) {
    if (!document.hidden) return false;
    document.title = '● ' + t('title_' + kind) + ' — ' + baseTitle;
    if (el.favicon && alertIcon) el.favicon.setAttribute('href', alertIcon);
    if ('Notification' in window && Notification.permission === 'granted') {
      try {
        const n = new Notification(t('title_' + kind), {
          body: t('notify_' + kind, { service: D.service_title }),
          tag: 'longrun-' + D.hash,
          icon: alertIcon || undefined,
        });
        n.onclick = function () { window.focus(); n.close(); };
      } catch (err) {
        // Some mobile browsers only allow notifications from a service worker; the title still says it.
      }
    }
    return true;
  }

  function welcomeBack() {
    if (document.hidden) return;
    document.title = baseTitle;
    if (el.favicon && baseIcon) el.favicon.setAttribute('href', baseIcon);
    if (resultPending) goToResult();
    else if (!finished && !live) poll();
  }
  document.addEventListener('visibilitychange', welcomeBack);
  window.addEventListener('focus', welcomeBack);

  function goToResult() { window.location.replace(D.result_url); }

  // ------------------------------------------------------------------ the timeline

  // Every change the page learns of, by seq: when it happened and what it said. Consecutive
  // changes that say the same (progress only) make one entry.
  const timeline = new Map();
  let reconnectedAt = 0;    // server ms a connection came back: older changes arriving now were missed

  function twoDigits(n) { return String(n).padStart(2, '0'); }
  function timeOfDay(ms) {
    const d = new Date(ms);
    return digits(twoDigits(d.getHours()) + ':' + twoDigits(d.getMinutes()) + ':' + twoDigits(d.getSeconds()));
  }
  function timelineText(r) {
    const status = r.status;
    if (status in TERMINAL) {
      return status === 'failed' && r.error ? t('status_failed') + ' — ' + errorText(r) : t('status_' + status);
    }
    if (status === 'waiting_otp') return t('status_waiting_otp');
    return messageText(r) || (status === 'pending' ? t('status_pending') : '');
  }
  function remember(r) {
    const seq = Number(r.seq) || 0;
    if (seq <= 0 || timeline.has(seq)) return;
    const at = Date.parse(r.updated_at || '') || serverNow();
    const text = timelineText(r);
    if (!text) return;
    timeline.set(seq, { at: at, text: text, away: reconnectedAt > 0 && at < reconnectedAt - 1000 });
    if (timeline.size > TIMELINE_MAX) timeline.delete(Math.min.apply(null, Array.from(timeline.keys())));
    renderTimeline();
  }
  function gapInTimeline() {
    timeline.set(-Date.now(), { at: serverNow(), text: t('timeline_gap'), away: true, gap: true });
  }
  function renderTimeline() {
    if (!el.timeline) return;
    const entries = Array.from(timeline.entries())
      .map(function (e) { return { seq: e[0] > 0 ? e[0] : Infinity, v: e[1] }; })
      .sort(function (a, b) { return a.seq - b.seq || a.v.at - b.v.at; });
    const items = [];
    entries.forEach(function (e) {
      const last = items[items.length - 1];
      if (last && !e.v.gap && !last.gap && last.text === e.v.text) return;  // the same words: progress only
      items.push(e.v);
    });
    el.timeline.textContent = '';
    items.forEach(function (v) {
      const li = document.createElement('li');
      li.className = 'tl-item' + (v.away ? ' tl-away' : '') + (v.gap ? ' tl-gap' : '');
      const when = document.createElement('time');
      when.dateTime = new Date(v.at).toISOString();
      when.dir = 'ltr';
      when.textContent = timeOfDay(v.at);
      const what = document.createElement('span');
      what.className = 'tl-text';
      what.textContent = v.text;
      li.appendChild(when);
      li.appendChild(document.createTextNode(' '));
      li.appendChild(what);
      if (v.away && !v.gap) {
        const note = document.createElement('span');
        note.className = 'tl-note';
        note.textContent = t('timeline_away');
        li.appendChild(document.createTextNode(' '));
        li.appendChild(note);
      }
      el.timeline.appendChild(li);
    });
    show(el.timelineWrap, items.length > 0);
  }

  // ------------------------------------------------------------------ applying records

  function apply(r, fresh, streamed) {
    if (!r || typeof r !== 'object' || (r.hash && r.hash !== D.hash)) return;
    const seq = Number(r.seq) || 0;
    remember(r);  // also a change older than what the page shows: one it missed while away
    if (streamed && seq > 0) streamSeq = Math.max(streamSeq, seq);
    // Older than what we show: a late poll answer. Old-style bots may rewrite a record
    // without bumping seq (an equal seq is applied again: rendering is idempotent) or
    // without any seq (0: records start at 1); the server's next change then carries a
    // seq past every earlier one.
    if (seq > 0 && seq < lastSeq && !fresh) return;
    if (seq > 0) lastSeq = seq;
    if (sending && seq > sendingSeq) sending = null;
    const previous = record ? record.status : null;
    record = r;
    render(r, previous);
    const status = r.status;
    if (status === 'waiting_otp' && previous !== 'waiting_otp') {
      if (previous !== null) callBack('otp');
      if (el.otpInput && !document.hidden) {
        el.otpInput.value = '';
        el.otpInput.focus({ preventScroll: false });
      }
    }
    if (status === 'waiting_otp' && previous === 'processing' && el.otpInput) {
      el.otpInput.select();
    }
    if (status === 'waiting_input' && (previous !== 'waiting_input' || !sending)) {
      if (previous !== null && previous !== 'waiting_input') callBack('input');
      if (previous !== 'waiting_input' || r.message_key === 'input_wrong') focusPrompt();
    }
    if (status in TERMINAL) {
      stopTraffic();
      if (status === 'completed') {
        if (callBack('ready')) resultPending = true;  // go when the person comes back
        else goToResult();
      } else if (status === 'failed' && previous !== null && previous !== 'failed') {
        callBack('failed');
      }
    }
  }

  function gone() {
    // 404: expired, or never ours. Nothing more will come.
    stopTraffic();
    el.live.dataset.status = 'failed';
    el.headline.textContent = t('e404_title');
    el.message.textContent = '';
    show(el.expired, true);
    show(el.otp, false);
    show(el.prompt, false);
    show(el.foot, false);
    eta = null;
    tick();
  }

  // ------------------------------------------------------------------ transports: socket, then event stream

  let ws = null;
  let es = null;             // the EventSource, when the socket did not get through
  let live = false;          // a socket or stream is open and delivering
  let wsFailures = 0;
  let wsTimer = 0;
  let pingTimer = 0;
  let streamSilence = 0;
  let silenceTimer = 0;
  let streamTimer = 0;
  let everLive = false;

  function setConn(state, transport) {
    if (!el.conn) return;
    el.conn.hidden = false;
    el.conn.dataset.state = state;
    el.conn.dataset.transport = state === 'live' ? transport : (state === 'polling' ? 'polling' : '');
    el.connText.textContent = t(state === 'live' ? 'conn_' + transport : 'conn_' + state);
  }

  function goLive(transport) {
    if (live) return;
    live = true;
    wsFailures = 0;
    stopPolling();
    setConn('live', transport);
    if (everLive) reconnectedAt = serverNow();
    everLive = true;
  }

  function resumeQuery() { return streamSeq > 0 ? '?since=' + streamSeq : ''; }

  function expectFrameSoon() {
    if (silenceTimer) return;  // the clock runs from the first ping or action unanswered
    silenceTimer = setTimeout(function () {
      silenceTimer = 0;
      // Dead, not merely quiet: the browser may wait a minute for its close handshake on a
      // path that carries nothing; the page falls back now (the late onclose is ignored).
      const sock = ws;
      if (!sock) return;
      sock.close();
      sock.onclose();
    }, SILENCE_MS);
  }

  // One round: the socket; if it never opens, the event stream; if that fails too, polling
  // carries the page until the next round (backing off).
  function connect() {
    clearTimeout(wsTimer);
    wsTimer = 0;
    if (finished || ws || es) return;
    if (typeof window.WebSocket !== 'function') { openStream(); return; }
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + D.ws_path + resumeQuery();
    let sock;
    try {
      sock = new WebSocket(url);
    } catch (err) {
      openStream();
      return;
    }
    ws = sock;
    sock.onopen = function () {
      // Anything missed since streamSeq comes first; the pong behind it says the socket is through.
      sock.send('{"type":"ping"}');
      expectFrameSoon();
      pingTimer = setInterval(function () {
        if (sock.readyState === 1) { sock.send('{"type":"ping"}'); expectFrameSoon(); }
      }, PING_MS);
    };
    sock.onmessage = function (event) {
      clearTimeout(silenceTimer);
      silenceTimer = 0;
      let frame;
      try { frame = JSON.parse(event.data); } catch (err) { return; }
      if (!frame || typeof frame !== 'object') return;
      if (frame.type === 'snapshot' || frame.type === 'update' || frame.type === 'pong') goLive('ws');
      if (frame.type === 'snapshot' || frame.type === 'update') {
        if (frame.recovered === false) gapInTimeline();
        apply(frame.request, frame.type === 'snapshot', true);
      } else if (frame.type === 'error') {
        if (frame.code === 'not_found') { gone(); return; }
        actionFailed(frame.code, frame.message);
      }
    };
    sock.onclose = function () {
      if (ws !== sock) return;
      const wasLive = live;
      ws = null;
      live = false;
      clearInterval(pingTimer);
      clearTimeout(silenceTimer);
      silenceTimer = 0;
      if (finished) return;
      if (sending) { sending = null; resetOtpButton(); }
      if (!wasLive) { openStream(); return; }  // the socket does not get through: try the stream
      dropped(true);
      scheduleReconnect();
    };
  }

  function openStream() {
    if (finished || es || typeof window.EventSource !== 'function') { dropped(false); scheduleReconnect(); return; }
    let source;
    try {
      source = new EventSource(D.sse_path + resumeQuery());
    } catch (err) {
      dropped(false);
      scheduleReconnect();
      return;
    }
    es = source;
    const resuming = streamSeq > 0;
    // Given up until the next round (refused, never through, or gone silent).
    function giveUp() {
      clearTimeout(streamTimer);
      es = null;
      source.close();
      const wasLive = live;
      live = false;
      if (finished) return;
      dropped(wasLive);
      scheduleReconnect();
    }
    // The server sends a keepalive event every heartbeat: three missed, the stream is dead
    // (an EventSource on a path that carries nothing would say "open" for many minutes).
    function expectEventSoon() {
      clearTimeout(streamSilence);
      streamSilence = setTimeout(function () { if (es === source) giveUp(); }, 3 * HEARTBEAT_MS + 5000);
    }
    expectEventSoon();
    source.addEventListener('keepalive', function () { if (es === source) expectEventSoon(); });
    function onRecord(kind) {
      return function (event) {
        if (es !== source) return;
        expectEventSoon();
        let r;
        try { r = JSON.parse(event.data); } catch (err) { return; }
        goLive('sse');
        if (kind === 'snapshot' && resuming) gapInTimeline();
        apply(r, kind === 'snapshot', true);
      };
    }
    source.addEventListener('snapshot', onRecord('snapshot'));
    source.addEventListener('update', onRecord('update'));
    source.onopen = function () {
      clearTimeout(streamTimer);
      if (es === source) goLive('sse');
    };
    source.onerror = function () {
      if (es !== source) return;
      if (source.readyState === 2 || !live) {
        giveUp();  // refused (an HTTP error) or never through
        return;
      }
      // the browser reconnects it by itself, with Last-Event-ID; poll meanwhile
      live = false;
      if (!finished) dropped(true);
    };
    clearTimeout(streamTimer);
    streamTimer = setTimeout(function () { if (es === source && !live) giveUp(); }, STREAM_WAIT_MS);
  }

  // The live connection is gone (or none got through): poll at once, so there is no gap. A
  // round that failed again leaves polling on its own schedule (every few seconds, backing off
  // on errors): rounds come often and must not turn into a poll each.
  function dropped(wasLive) {
    if (finished) return;
    if (wasLive || !pollsStarted) schedulePoll(0);
    else if (!pollTimer && !polling) schedulePoll(nextPollDelay());
  }

  function scheduleReconnect() {
    if (finished || wsTimer) return;
    const base = Math.min(WS_MAX_MS, 1000 * Math.pow(2, wsFailures));
    wsFailures += 1;
    wsTimer = setTimeout(connect, base * (0.75 + Math.random() * 0.5));
  }

  // ------------------------------------------------------------------ transport: polling

  let pollTimer = 0;
  let polling = false;
  let pollsStarted = false;
  let pollFailures = 0;
  let fastUntil = 0;

  function stopPolling() { clearTimeout(pollTimer); pollTimer = 0; }

  function schedulePoll(delay) {
    if (finished || live) return;
    clearTimeout(pollTimer);
    pollTimer = setTimeout(poll, delay);
  }

  function nextPollDelay() {
    if (pollFailures > 0) {
      const backoff = Math.min(POLL_MAX_MS, POLL_MS * Math.pow(1.6, pollFailures));
      return backoff * (0.8 + Math.random() * 0.4);
    }
    return Date.now() < fastUntil ? POLL_FAST_MS : POLL_MS;
  }

  async function request(url, options) {
    const controller = 'AbortController' in window ? new AbortController() : null;
    const timer = controller ? setTimeout(function () { controller.abort(); }, 8000) : 0;
    try {
      const resp = await fetch(url, Object.assign({
        credentials: 'same-origin', cache: 'no-store', signal: controller ? controller.signal : undefined,
        headers: { Accept: 'application/json' },
      }, options || {}));
      let body = null;
      try { body = await resp.json(); } catch (err) { body = null; }
      return { status: resp.status, ok: resp.ok, body: body, retryAfter: Number(resp.headers.get('Retry-After')) || 0 };
    } finally {
      clearTimeout(timer);
    }
  }

  async function poll() {
    pollTimer = 0;
    if (finished || live || polling) return;
    polling = true;
    pollsStarted = true;
    let delay;
    try {
      const resp = await request(D.api_url);
      if (resp.status === 404) { gone(); return; }
      if (resp.ok && resp.body) {
        pollFailures = 0;
        if (!live) setConn('polling');
        apply(resp.body, false);
        delay = nextPollDelay();
      } else if (resp.status === 429) {
        delay = Math.max(POLL_MS, resp.retryAfter * 1000);
      } else {
        pollFailures += 1;
        setConn('offline');
        delay = nextPollDelay();
      }
    } catch (err) {
      pollFailures += 1;
      if (!live) setConn('offline');
      delay = nextPollDelay();
    } finally {
      polling = false;
    }
    if (delay !== undefined) schedulePoll(delay);
  }

  function stopTraffic() {
    finished = true;
    stopPolling();
    clearTimeout(wsTimer);
    clearInterval(pingTimer);
    clearTimeout(silenceTimer);
    silenceTimer = 0;
    clearTimeout(streamSilence);
    clearTimeout(streamTimer);
    if (ws) { const s = ws; ws = null; live = false; s.close(1000); }
    if (es) { const s = es; es = null; live = false; s.close(); }
    if (el.conn) el.conn.hidden = true;
  }

  // ------------------------------------------------------------------ actions

  const PATHS = { otp: 'otp', input: 'input', resend_otp: 'resend-otp', cancel: 'cancel' };

  async function act(kind, payload) {
    setNotice('');
    sending = kind;
    sendingSeq = lastSeq;
    fastUntil = Date.now() + 10000;
    if (live && ws && ws.readyState === 1) {
      ws.send(JSON.stringify(Object.assign({ type: kind }, payload || {})));
      expectFrameSoon();  // an update or an error frame must follow; silence means a dead socket
      return;
    }
    try {
      const resp = await request(D.api_url + '/' + PATHS[kind], {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify(payload || {}),
      });
      if (resp.ok && resp.body && resp.body.request) {
        if (kind === 'resend_otp') setNotice(t('resent'));
        apply(resp.body.request, false);
      } else if (resp.status === 404) {
        gone();
      } else {
        const err = resp.body && resp.body.error ? resp.body.error : {};
        actionFailed(err.code || (resp.status === 429 ? 'rate_limited' : 'generic'), err.message);
      }
    } catch (err) {
      actionFailed('network');
    }
    schedulePoll(POLL_FAST_MS);
  }

  function actionFailed(code, message) {
    const kind = sending;
    sending = null;
    resetOtpButton();
    let key = 'err_' + code;
    if (code === 'invalid' || code === 'bad_frame') key = kind === 'otp' ? 'err_otp_invalid' : kind === 'input' ? 'err_input_invalid' : 'err_generic';
    const text = UI[key] ? t(key) : (D.lang === 'en' && message ? message : t('err_generic'));
    setPromptBusy(false);
    if (record && record.status === 'waiting_input' && (kind === 'input' || !kind)) {
      promptError(text);
      if (kind === 'input') focusPrompt();
    } else if (record && record.status === 'waiting_otp' && (kind === 'otp' || kind === 'resend_otp' || !kind)) {
      otpError(text);
      if (el.otpInput && kind === 'otp') el.otpInput.focus();
    } else {
      setNotice(text, true);
    }
    if (code === 'not_waiting_for_otp' || code === 'already_finished' || code === 'otp_pending' ||
        code === 'not_waiting_for_input' || code === 'input_pending') {
      // Our view is behind: fetch the truth now.
      if (!live) schedulePoll(0);
    }
    tick();
  }

  if (el.otpForm) {
    el.otpForm.addEventListener('submit', function (event) {
      event.preventDefault();
      if (sending === 'otp') return;
      const code = el.otpInput.value.replace(/[\s-]/g, '');
      if (!el.otpInput.checkValidity() || !code) {
        otpError(t('err_otp_invalid'));
        el.otpInput.focus();
        return;
      }
      otpError('');
      el.otpSubmit.disabled = true;
      el.otpSubmit.textContent = el.otpSubmit.dataset.busy || otpLabel;
      act('otp', { otp: code });
    });
    // A pasted or auto-filled code of the right length is sent at once.
    el.otpInput.addEventListener('input', function () {
      otpError('');
      const code = el.otpInput.value.replace(/[\s-]/g, '');
      if (code.length === el.otpInput.maxLength && el.otpInput.checkValidity() && sending !== 'otp') {
        el.otpForm.requestSubmit ? el.otpForm.requestSubmit() : el.otpForm.dispatchEvent(new Event('submit', { cancelable: true }));
      }
    });
  }
  if (el.promptForm) {
    // The page says what is wrong, in the person's language (the browser's own bubble would not).
    el.promptForm.noValidate = true;
    el.promptForm.addEventListener('submit', function (event) {
      event.preventDefault();
      if (sending === 'input' || !record) return;
      const button = event.submitter && event.submitter.name === 'value' ? event.submitter : null;
      const field = promptField();
      if (!button && field && !field.checkValidity()) {
        promptError(t('err_input_invalid'));
        field.focus();
        return;
      }
      const p = promptOf(record);
      let value = button ? button.value : (field ? field.value : '');
      if (!button && p && p.kind === 'text') {
        value = typed(value);  // a Persian keyboard's digits fit a pattern of 0-9, as on the server
        if (!value || !fitsPattern(p.pattern, value)) {
          promptError(t('err_input_invalid'));
          field.focus();
          return;
        }
      }
      promptError('');
      setPromptBusy(true);
      act('input', { id: el.promptId.value, value: p && p.kind === 'confirm' ? value === 'yes' : value });
    });
  }
  if (el.resendForm) {
    el.resendForm.addEventListener('submit', function (event) {
      event.preventDefault();
      if (el.resend.disabled) return;
      otpError('');
      act('resend_otp');
      tick();
    });
  }
  if (el.cancelForm) {
    el.cancelForm.addEventListener('submit', function (event) {
      event.preventDefault();
      if (sending === 'cancel') return;
      act('cancel');
    });
  }

  // ------------------------------------------------------------------ start

  apply(D.record, true, true);
  if (!finished) {
    setConn('connecting');
    connect();
    // If the socket has not delivered a snapshot by then, poll.
    schedulePoll(ws ? 2500 : 0);
  }
  setInterval(tick, 1000);
  window.addEventListener('online', function () {
    if (finished) return;
    wsFailures = 0;
    if (!ws && !es) connect();
    schedulePoll(0);
  });
  window.addEventListener('pageshow', function (event) {
    if (event.persisted && !finished) { if (!ws && !es) connect(); schedulePoll(0); }
  });
})();
