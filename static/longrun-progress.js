// <longrun-progress request="req_…" token="lrv_…" base="https://longrun.example" lang="fa">
//
// A request's live progress, prompts and result inside any page: a custom element with a
// shadow root, no framework, no build step, a classic script (no module, so no CORS needed
// to load it). README "Embedding" documents the attributes, events and CSS custom properties.
//
// Its rules are the progress page's (static/progress.js, server/domain/display.py); its
// words come from the server (GET /api/embed/strings), one text per key in every language.
// CSP: no inline script or style is ever added to the host page. Styles are a constructed
// stylesheet adopted by the shadow root (not subject to style-src); widths are set through
// the CSSOM. The host page's connect-src must allow the Longrun base (https: and wss:).
//
// Where features plug in (one function each):
// - transports: TRANSPORTS, in order of preference: the socket, the event stream
//   (GET /sse/requests/{hash}, read with fetch() and a stream reader since EventSource cannot
//   send the Authorization header), then polling. Each is open(view, level) returning
//   {send(frame) -> bool, close()}, handing records to view.receive(record, fresh, level) and
//   calling view.down(level) when it fails; the socket and the stream resume with ?since= the
//   last seq the element has. The one in use is the connection part's data-transport.
// - prompts: PROMPTS, keyed by a prompt's kind (code, captcha, text, choice, confirm):
//   (view, prompt) -> a node that calls view.answer(prompt, value). answerFrame() makes
//   {"type": "input", id, value} for any kind but "code", which act() sends over the socket
//   or posts to …/input.
'use strict';
(function () {
  if (!window.customElements || window.customElements.get('longrun-progress')) return;

  const SCRIPT_ORIGIN = document.currentScript && document.currentScript.src
    ? new URL(document.currentScript.src).origin : window.location.origin;
  const TERMINAL = { completed: true, failed: true, cancelled: true };
  const QUIET_IN_OTP = { otp: true, otp_wrong: true };
  const POLL_MS = 5000;
  const POLL_FAST_MS = 1000;
  const POLL_MAX_MS = 30000;
  const RETRY_MAX_MS = 30000;
  const PING_MS = 25000;
  const SSE_SILENCE_MS = 45000;
  const SSE_MAX_BUFFER = 1024 * 1024;
  const SILENCE_MS = 10000;
  const FA_DIGITS = '۰۱۲۳۴۵۶۷۸۹';
  const AR_DIGITS = '٠١٢٣٤٥٦٧٨٩';
  // What the person typed, as the server reads it: Persian and Arabic digits as 0-9.
  function asciiDigits(value) {
    return String(value).replace(/[۰-۹٠-٩]/g, function (d) {
      const i = FA_DIGITS.indexOf(d);
      return String(i >= 0 ? i : AR_DIGITS.indexOf(d));
    });
  }
  // The one text shown before the server's words arrive: i18n.py's "embed_unreachable".
  const UNREACHABLE = {
    en: 'Longrun cannot be reached. Retrying…',
    fa: 'به Longrun دسترسی نیست. دوباره تلاش می‌کنیم…',
  };
  const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)$/;

  // ------------------------------------------------------------------ styles (themable)

  const CSS = [
    ':host{display:block;font-family:var(--longrun-font,system-ui,sans-serif);color:var(--longrun-fg,#1d2330);',
    'background:var(--longrun-bg,#fff);border:1px solid var(--longrun-border,#d9dde5);',
    'border-radius:var(--longrun-radius,12px);padding:var(--longrun-padding,16px);box-sizing:border-box;line-height:1.5}',
    ':host([hidden]){display:none}',
    '*{box-sizing:border-box}[hidden]{display:none!important}',
    '.top{display:flex;justify-content:space-between;align-items:baseline;gap:8px;flex-wrap:wrap}',
    '.title{font-weight:600;margin:0;font-size:1em}',
    '.conn{font-size:.8em;color:var(--longrun-muted,#5b6475);display:inline-flex;align-items:center;gap:6px}',
    '.conn::before{content:"";width:8px;height:8px;border-radius:50%;background:var(--longrun-muted,#5b6475)}',
    '.conn[data-state=live]::before{background:var(--longrun-success,#1a7f37)}',
    '.conn[data-state=offline]::before{background:var(--longrun-error,#b42318)}',
    '.headline{font-size:1.25em;font-weight:600;margin:8px 0 2px}',
    '.message{margin:0 0 8px;color:var(--longrun-muted,#5b6475)}',
    '.bar{height:10px;border-radius:999px;background:var(--longrun-track,#eef0f4);overflow:hidden}',
    '.fill{height:100%;width:0;background:var(--longrun-accent,#2457d6);transition:width .4s ease}',
    ':host([data-status=completed]) .fill{background:var(--longrun-success,#1a7f37)}',
    ':host([data-status=failed]) .fill{background:var(--longrun-error,#b42318)}',
    '.meta{display:flex;justify-content:space-between;font-size:.9em;margin:4px 0 8px;color:var(--longrun-muted,#5b6475)}',
    '.steps{list-style:none;margin:8px 0;padding:0;display:grid;gap:4px}',
    '.step{display:flex;gap:8px;align-items:center;font-size:.95em}',
    '.step::before{content:"";flex:none;width:12px;height:12px;border-radius:50%;border:2px solid var(--longrun-border,#d9dde5)}',
    '.step-done::before{background:var(--longrun-success,#1a7f37);border-color:var(--longrun-success,#1a7f37)}',
    '.step-current{font-weight:600}',
    '.step-current::before{border-color:var(--longrun-accent,#2457d6);background:var(--longrun-accent,#2457d6)}',
    '.step-failed::before{background:var(--longrun-error,#b42318);border-color:var(--longrun-error,#b42318)}',
    '.step-todo{color:var(--longrun-muted,#5b6475)}',
    '.step-at{margin-inline-start:auto;font-size:.85em;color:var(--longrun-muted,#5b6475);direction:ltr;unicode-bidi:isolate}',
    '.prompt{margin:12px 0;padding:12px;border-radius:calc(var(--longrun-radius,12px) - 4px);',
    'background:var(--longrun-prompt-bg,#f4f7ff);border:1px solid var(--longrun-accent,#2457d6)}',
    '.prompt h3{margin:0 0 4px;font-size:1em}.prompt p{margin:0 0 8px}',
    '.row{display:flex;gap:8px;flex-wrap:wrap}',
    'input{font:inherit;padding:8px 10px;border:1px solid var(--longrun-border,#d9dde5);border-radius:8px;',
    'min-width:0;flex:1 1 8em;letter-spacing:.2em;direction:ltr;text-align:center;background:#fff;color:#1d2330}',
    'input[aria-invalid=true]{border-color:var(--longrun-error,#b42318)}',
    'button{font:inherit;padding:8px 14px;border-radius:8px;border:1px solid var(--longrun-accent,#2457d6);',
    'background:var(--longrun-accent,#2457d6);color:var(--longrun-on-accent,#fff);cursor:pointer}',
    'button.secondary{background:transparent;color:var(--longrun-accent,#2457d6)}',
    'button.danger{background:transparent;border-color:var(--longrun-error,#b42318);color:var(--longrun-error,#b42318)}',
    'button:disabled{opacity:.55;cursor:default}',
    '.small{font-size:.85em;color:var(--longrun-muted,#5b6475)}',
    '.error,.notice{margin:8px 0;padding:8px 10px;border-radius:8px}',
    '.error{background:var(--longrun-error-bg,#fdecea);color:var(--longrun-error,#b42318)}',
    '.notice{background:var(--longrun-track,#eef0f4)}',
    '.result{margin-top:12px}.result h3{margin:0 0 6px;font-size:1em}',
    '.result dl{display:grid;grid-template-columns:minmax(6em,max-content) 1fr;gap:4px 12px;margin:0}',
    '.result dt{color:var(--longrun-muted,#5b6475)}.result dd{margin:0;overflow-wrap:anywhere}',
    '.result table{border-collapse:collapse;width:100%;font-size:.9em}',
    '.result th,.result td{border-bottom:1px solid var(--longrun-border,#d9dde5);padding:4px;text-align:start}',
    '.result ul{margin:0;padding-inline-start:1.2em}',
    '.actions{display:flex;gap:8px;flex-wrap:wrap;margin-top:8px}',
    '.ltr{direction:ltr;unicode-bidi:isolate;white-space:nowrap}',
    '.captcha{display:block;max-width:100%;height:auto;margin:0 0 8px;border-radius:6px;background:#fff}',
    'input.text{letter-spacing:normal;text-align:start;direction:auto}',
    '.choices button{flex:1 1 auto}',
    '@media (prefers-reduced-motion:reduce){.fill{transition:none}}',
  ].join('');
  let sheet = null;
  function adoptStyles(root) {
    if ('adoptedStyleSheets' in root && typeof CSSStyleSheet === 'function' && 'replaceSync' in CSSStyleSheet.prototype) {
      if (!sheet) { sheet = new CSSStyleSheet(); sheet.replaceSync(CSS); }
      root.adoptedStyleSheets = [sheet];
      return;
    }
    // An old browser: a <style> element (needs style-src to allow it; current browsers never get here).
    const style = document.createElement('style');
    style.textContent = CSS;
    root.appendChild(style);
  }

  // ------------------------------------------------------------------ words (one request per base and language)

  const stringsCache = new Map();
  function loadStrings(base, lang) {
    const key = base + '|' + lang;
    if (!stringsCache.has(key)) {
      const loaded = fetch(base + '/api/embed/strings?lang=' + encodeURIComponent(lang), { credentials: 'omit' })
        .then(function (resp) { if (!resp.ok) throw new Error('strings ' + resp.status); return resp.json(); });
      loaded.catch(function () { stringsCache.delete(key); });
      stringsCache.set(key, loaded);
    }
    return stringsCache.get(key);
  }

  function h(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const name in attrs || {}) {
      if (name === 'text') node.textContent = attrs[name];
      else if (name === 'hidden') node.hidden = !!attrs[name];
      else node.setAttribute(name, attrs[name]);
    }
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }

  // The payload of a viewer token says what it may do (it is signed, not secret).
  function tokenRights(token) {
    if (!token || token.indexOf('lrv_') !== 0) return { cancel: true };
    try {
      const part = token.slice(4).split('.')[0].replace(/-/g, '+').replace(/_/g, '/');
      const data = JSON.parse(atob(part + '==='.slice((part.length + 3) % 4)));
      return { cancel: !!data.c, expires: Number(data.x) * 1000 };
    } catch (err) {
      return { cancel: false };
    }
  }

  // ------------------------------------------------------------------ prompts

  // What the record asks of the person, as a prompt {kind, ...}; null when nothing.
  // Issue 14 (captcha/choice/confirm/text): status waiting_input with record.input_request.
  function promptOf(r) {
    if (r.status === 'waiting_otp') {
      const od = r.otp_data && typeof r.otp_data === 'object' ? r.otp_data : {};
      return { kind: 'code', id: null, otp: od, wrong: !!od.error || r.message_key === 'otp_wrong' };
    }
    if (r.status === 'waiting_input' && r.input_request && typeof r.input_request === 'object') {
      return r.input_request;
    }
    return null;
  }
  // An answer as a socket frame (DESIGN.md); act() sends it, or posts it while polling.
  function answerFrame(prompt, value) {
    return prompt.kind === 'code' ? { type: 'otp', otp: value } : { type: 'input', id: prompt.id, value: value };
  }

  // Each prompt kind: (view, prompt) -> a node. It calls view.answer(prompt, value) to answer.
  const PROMPTS = {
    code: function (view, prompt) {
      const od = prompt.otp;
      const length = Number.isInteger(od.length) && od.length >= 4 && od.length <= 10 ? od.length : 6;
      const input = h('input', {
        part: 'input', inputmode: 'numeric', autocomplete: 'one-time-code', maxlength: String(length),
        pattern: '[0-9۰-۹]{' + length + '}', placeholder: '•'.repeat(length), 'aria-label': view.t('otp_label'),
        required: '',
      });
      const submit = h('button', { part: 'button', type: 'submit', text: view.t('otp_submit') });
      const resend = h('button', { part: 'button', type: 'button', class: 'secondary', text: view.t('resend') });
      const wait = h('span', { class: 'small resend-wait' });
      const left = od.attempts_left;
      const error = prompt.wrong ? (view.lang === 'en' && typeof od.error === 'string' && od.error ? od.error : view.t('otp_wrong')) : '';
      const form = h('form', { class: 'prompt', part: 'prompt', 'data-kind': 'code' }, [
        h('h3', { text: view.t('otp_title') }),
        od.destination_hint ? h('p', {}, [
          document.createTextNode(view.t('otp_sent_to') + ' '),
          h('span', { class: 'ltr', text: String(od.destination_hint) }),
        ]) : null,
        h('div', { class: 'row' }, [input, submit]),
        error ? h('div', { class: 'error', role: 'alert', text: error }) : null,
        Number.isInteger(left) ? h('p', { class: 'small', text: left === 1 ? view.t('attempts_one') : view.t('attempts_other', { n: left }) }) : null,
        h('div', { class: 'row' }, [resend, wait]),
      ]);
      if (error) input.setAttribute('aria-invalid', 'true');
      const resendAt = Date.parse(od.resend_available_at || '') || 0;
      view.onTick(function () {
        const seconds = (resendAt - view.serverNow()) / 1000;
        resend.disabled = seconds >= 1 || view.sending === 'resend_otp';
        wait.textContent = seconds >= 1 ? view.t('resend_in', { time: view.clock(seconds) }) : '';
      });
      form.addEventListener('submit', function (event) {
        event.preventDefault();
        const code = asciiDigits(input.value).replace(/\s/g, '');
        if (!new RegExp('^[0-9]{' + length + '}$').test(code)) {
          input.setAttribute('aria-invalid', 'true');
          input.focus();
          return;
        }
        submit.disabled = true;
        submit.textContent = view.t('sending');
        view.answer(prompt, code);
      });
      resend.addEventListener('click', function () { view.act('resend_otp'); });
      view.focusLater(input);
      return form;
    },
    captcha: function (view, prompt) {
      const image = typeof prompt.image === 'string' && prompt.image.indexOf('data:image/png;base64,') === 0 ? prompt.image : '';
      const length = Number.isInteger(prompt.length) ? prompt.length : null;
      const input = h('input', {
        part: 'input', type: 'text', dir: 'ltr', autocomplete: 'off', autocapitalize: 'off', spellcheck: 'false',
        maxlength: '32', 'aria-label': view.t('captcha_label'), required: '',
      });
      const picture = h('img', { class: 'captcha', part: 'captcha', src: image, width: '220', height: '80', alt: view.t('captcha_alt', { n: length === null ? '' : length }) });
      return inputForm(view, prompt, [picture, h('div', { class: 'row' }, [input, submitButton(view)])], input, function () {
        const value = asciiDigits(input.value).replace(/\s/g, '');
        return value.length >= 1 && value.length <= 32 ? value : null;
      });
    },
    text: function (view, prompt) {
      const max = Number.isInteger(prompt.max_length) ? prompt.max_length : 100;
      const input = h('input', { part: 'input', type: 'text', class: 'text', maxlength: String(max), 'aria-label': view.t('input_label'), required: '' });
      return inputForm(view, prompt, [h('div', { class: 'row' }, [input, submitButton(view)])], input, function () {
        const value = asciiDigits(input.value).trim();
        if (!value || value.length > max) return null;
        if (typeof prompt.pattern === 'string') {
          try { if (!new RegExp('^(?:' + prompt.pattern + ')$', 'u').test(value)) return null; } catch (err) { /* the server checks */ }
        }
        return value;
      });
    },
    choice: function (view, prompt) {
      const options = Array.isArray(prompt.options) ? prompt.options.slice(0, 20) : [];
      return choiceForm(view, prompt, options.map(function (o) { return { value: String(o.value), label: String(o.label || o.value) }; }));
    },
    confirm: function (view, prompt) {
      return choiceForm(view, prompt, [{ value: true, label: view.t('confirm_yes'), primary: true }, { value: false, label: view.t('confirm_no') }]);
    },
  };

  function submitButton(view) { return h('button', { part: 'button', type: 'submit', text: view.t('input_submit') }); }

  // The frame of every prompt but the code: its title, the bot's label, the error and tries left.
  function promptBox(view, prompt, body) {
    const wrong = !!prompt.error || (view.record && view.record.message_key === 'input_wrong');
    const error = wrong ? (view.lang === 'en' && typeof prompt.error === 'string' && prompt.error ? prompt.error : view.t('input_wrong')) : '';
    // A choice or a yes/no is not guessed at: its tries are not worth a line (as on the page).
    const left = prompt.kind === 'captcha' || prompt.kind === 'text' ? prompt.attempts_left : null;
    const form = h('form', { class: 'prompt', part: 'prompt', 'data-kind': prompt.kind }, [
      h('h3', { text: view.t('input_title_' + prompt.kind) }),
      typeof prompt.label === 'string' && prompt.label ? h('p', { class: 'label', text: prompt.label }) : null,
    ].concat(body, [
      error ? h('div', { class: 'error', role: 'alert', text: error }) : null,
      Number.isInteger(left) ? h('p', { class: 'small', text: left === 1 ? view.t('attempts_one') : view.t('attempts_other', { n: left }) }) : null,
    ]));
    return { form: form, error: error };
  }

  // A prompt answered by typing: read() gives the answer, or null when it cannot be one.
  function inputForm(view, prompt, body, input, read) {
    const box = promptBox(view, prompt, body);
    if (box.error) input.setAttribute('aria-invalid', 'true');
    box.form.addEventListener('submit', function (event) {
      event.preventDefault();
      const value = read();
      if (value === null) {
        input.setAttribute('aria-invalid', 'true');
        let note = box.form.querySelector('.error');
        if (!note) note = box.form.appendChild(h('div', { class: 'error', role: 'alert' }));
        note.textContent = view.t('err_input_invalid');
        input.focus();
        return;
      }
      const submit = box.form.querySelector('button[type=submit]');
      submit.disabled = true;
      submit.textContent = view.t('sending');
      view.answer(prompt, value);
    });
    view.focusLater(input);
    return box.form;
  }

  // A prompt answered with one button among a few.
  function choiceForm(view, prompt, options) {
    const buttons = options.map(function (o) {
      const b = h('button', { part: 'button choice', type: 'submit', class: 'choice' + (o.primary || options.length > 2 ? '' : ' secondary') }, [h('bdi', { text: o.label })]);
      b.addEventListener('click', function (event) {
        event.preventDefault();
        buttons.forEach(function (other) { other.disabled = true; });
        view.answer(prompt, o.value);
      });
      return b;
    });
    const box = promptBox(view, prompt, [h('div', { class: 'row choices', role: 'group' }, buttons)]);
    box.form.addEventListener('submit', function (event) { event.preventDefault(); });
    if (buttons.length) view.focusLater(buttons[0]);
    return box.form;
  }

  // ------------------------------------------------------------------ transports

  // Each transport: open(view, level) -> {send(frame) -> bool, close()}. It hands records to
  // view.receive(record, fresh, level) and says view.down(level) when it cannot go on; the
  // view then runs the next one and tries this one again later (backoff).
  function socketTransport(view, level) {
    const url = view.base.replace(/^http/, 'ws') + '/ws/requests/' + encodeURIComponent(view.request) +
      (view.lastSeq > 0 ? '?since=' + view.lastSeq : '');
    let ws;
    try {
      ws = new WebSocket(url, ['longrun', 'bearer.' + view.token]);
    } catch (err) {
      setTimeout(function () { view.down(level); }, 0);
      return { send: function () { return false; }, close: function () {} };
    }
    let open = false;
    let closed = false;
    let silence = null;
    let pinger = null;
    let ended = false;
    function expectSoon() {
      if (silence) return;  // the clock runs from the first ping or action unanswered
      // Dead, not merely quiet: the browser may wait a minute for its close handshake on a
      // path that carries nothing; the element falls back now (the late onclose is ignored).
      silence = setTimeout(function () { ws.close(); ws.onclose(); }, SILENCE_MS);
    }
    function ping() { ws.send('{"type":"ping"}'); expectSoon(); }
    ws.onopen = function () {
      open = true;
      // the pong says the socket is through, also when a resume has nothing to send
      ping();
      pinger = setInterval(function () { if (ws.readyState === 1) ping(); }, PING_MS);
    };
    ws.onmessage = function (event) {
      clearTimeout(silence);
      silence = null;
      let frame;
      try { frame = JSON.parse(event.data); } catch (err) { return; }
      if (frame.type === 'snapshot' || frame.type === 'update') view.receive(frame.request, frame.type === 'snapshot', level);
      else if (frame.type === 'pong') view.up(level);
      else if (frame.type === 'error') view.refused(frame.code, frame.message);
    };
    ws.onclose = function () {
      if (ended) return;
      ended = true;
      clearInterval(pinger);
      clearTimeout(silence);
      if (!closed) view.down(level, open);
    };
    return {
      send: function (frame) {
        if (!open || ws.readyState !== 1) return false;
        ws.send(JSON.stringify(frame));
        expectSoon();
        return true;
      },
      close: function () { closed = true; clearInterval(pinger); clearTimeout(silence); ws.close(); },
    };
  }

  function pollingTransport(view, level) {
    let timer = null;
    let stopped = false;
    let failures = 0;
    function next(ms) { clearTimeout(timer); if (!stopped) timer = setTimeout(poll, ms); }
    function poll() {
      view.call('GET', '').then(function (record) {
        failures = 0;
        if (stopped) return;
        view.receive(record, false, level);
        next(view.sending ? POLL_FAST_MS : POLL_MS);
      }, function (err) {
        if (stopped || err.final) return;
        failures += 1;
        view.setConn('offline');
        next(Math.min(POLL_MAX_MS, POLL_MS * Math.pow(2, failures - 1)));
      });
    }
    poll();
    return {
      send: function () { return false; },
      close: function () { stopped = true; clearTimeout(timer); },
      soon: function () { next(POLL_FAST_MS); },
    };
  }

  // The event stream (GET /sse/requests/{hash}), for networks that block WebSockets: read with
  // fetch() and a stream reader, as EventSource cannot send the Authorization header. Each
  // (re)connection resumes with ?since= the last seq the element has.
  function sseTransport(view, level) {
    const dead = { send: function () { return false; }, close: function () {} };
    if (typeof AbortController !== 'function' || typeof TextDecoder !== 'function' || !window.ReadableStream) {
      setTimeout(function () { view.down(level); }, 0);
      return dead;
    }
    const controller = new AbortController();
    const url = view.base + '/sse/requests/' + encodeURIComponent(view.request) + (view.lastSeq > 0 ? '?since=' + view.lastSeq : '');
    let stopped = false;
    let delivered = false;
    let silence = null;
    function quiet() {  // keepalives come every 15 s: much longer without a byte is a dead stream
      clearTimeout(silence);
      silence = setTimeout(function () { controller.abort(); }, SSE_SILENCE_MS);
    }
    function handle(block) {
      let event = 'message';
      const data = [];
      block.split('\n').forEach(function (line) {
        if (!line || line[0] === ':') return;
        const at = line.indexOf(':');
        const name = at < 0 ? line : line.slice(0, at);
        const value = at < 0 ? '' : line.slice(at + 1).replace(/^ /, '');
        if (name === 'event') event = value;
        else if (name === 'data') data.push(value);
      });
      if ((event !== 'snapshot' && event !== 'update') || !data.length) return;
      let record;
      try { record = JSON.parse(data.join('\n')); } catch (err) { return; }
      delivered = true;
      view.receive(record, event === 'snapshot', level);
    }
    quiet();
    fetch(url, {
      credentials: 'omit', cache: 'no-store', signal: controller.signal,
      headers: { Authorization: 'Bearer ' + view.token, Accept: 'text/event-stream' },
    }).then(function (resp) {
      if (stopped) return;
      if (resp.status === 404) { stopped = true; view.gone(); return; }
      if (resp.status === 401) { stopped = true; view.expired(); return; }
      if (!resp.ok || !resp.body) throw new Error('sse ' + resp.status);
      delivered = true;
      view.up(level);  // through, also when a resume has nothing to send
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) throw new Error('sse ended');
          quiet();
          buffer = (buffer + decoder.decode(chunk.value, { stream: true })).replace(/\r\n?/g, '\n');
          if (buffer.length > SSE_MAX_BUFFER) throw new Error('sse event too large');
          let end;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            if (!stopped) handle(block);
          }
          return stopped ? undefined : pump();
        });
      }
      return pump();
    }).catch(function () {
      clearTimeout(silence);
      if (stopped) return;
      stopped = true;
      view.down(level, delivered);
    });
    return {
      send: function () { return false; },
      close: function () { stopped = true; clearTimeout(silence); controller.abort(); },
    };
  }

  // In order of preference; TRANSPORT_NAMES is what the element says it is on (data-transport).
  const TRANSPORTS = [socketTransport, sseTransport, pollingTransport];
  const TRANSPORT_NAMES = ['websocket', 'sse', 'polling'];

  // ------------------------------------------------------------------ the element

  class LongrunProgress extends HTMLElement {
    static get observedAttributes() { return ['request', 'token', 'base', 'lang']; }

    constructor() {
      super();
      this.root = this.attachShadow({ mode: 'open' });
      adoptStyles(this.root);
      this.ticks = [];
      this.tickTimer = null;
      this.generation = 0;
    }

    connectedCallback() { this.start(); }
    disconnectedCallback() { this.stop(); }
    attributeChangedCallback(name, before, after) {
      if (before !== after && this.isConnected && this.started) this.start();
    }

    get request() { return this.getAttribute('request') || ''; }
    get token() { return this.getAttribute('token') || ''; }
    get base() { return (this.getAttribute('base') || SCRIPT_ORIGIN).replace(/\/+$/, ''); }
    get lang() {
      const own = this.getAttribute('lang') || (this.closest('[lang]') || document.documentElement).getAttribute('lang') || 'en';
      return own.toLowerCase().indexOf('fa') === 0 ? 'fa' : 'en';
    }

    // -------------------------------------------------------------- life

    start() {
      this.stop();
      this.started = true;
      const generation = ++this.generation;
      this.record = null;
      this.lastSeq = -1;
      this.finished = false;
      this.sending = null;
      this.sendingSeq = 0;
      this.levels = [];
      this.retries = [];
      this.backoff = [];
      this.live = -1;
      this.rights = tokenRights(this.token);
      this.offset = 0;
      this.build();
      const self = this;
      loadStrings(this.base, this.lang).then(function (s) {
        if (generation !== self.generation) return;
        self.S = s;
        self.offset = Date.now() - s.server_now;
        self.root.querySelector('.root').setAttribute('dir', s.dir);
        self.root.querySelector('.root').setAttribute('lang', s.lang);
        self.setConn('connecting');
        self.open(0);
        self.tickTimer = setInterval(function () { self.tick(); }, 1000);
      }, function () {
        if (generation !== self.generation) return;
        self.el.notice.textContent = UNREACHABLE[self.lang];
        self.el.notice.hidden = false;
        setTimeout(function () { if (generation === self.generation) self.start(); }, 5000);
      });
    }

    stop() {
      this.generation++;
      (this.levels || []).forEach(function (l) { if (l) l.close(); });
      (this.retries || []).forEach(function (r) { clearTimeout(r); });
      this.levels = [];
      this.retries = [];
      clearInterval(this.tickTimer);
    }

    // -------------------------------------------------------------- transports

    open(level) {
      if (this.finished || level >= TRANSPORTS.length || this.levels[level]) return;
      this.levels[level] = TRANSPORTS[level](this, level);
    }

    down(level, wasOpen) {
      if (this.finished) return;
      this.levels[level] = null;
      if (this.live === level) this.live = -1;
      this.open(level + 1);
      // Try this one again later, with backoff (reset once it delivered).
      const wait = Math.min(RETRY_MAX_MS, (this.backoff[level] = wasOpen ? 1000 : Math.min(RETRY_MAX_MS, (this.backoff[level] || 500) * 2)));
      const self = this;
      const generation = this.generation;
      clearTimeout(this.retries[level]);
      this.retries[level] = setTimeout(function () { if (generation === self.generation) self.open(level); }, wait * (0.8 + Math.random() * 0.4));
      if (this.live < 0) this.setConn('offline');
    }

    receive(record, fresh, level) {
      if (this.finished && !(record && record.status in TERMINAL)) return;
      this.up(level);
      this.apply(record, fresh);
    }

    // A transport got through (a record, a pong, a stream's answer): the ones after it are not
    // needed any more.
    up(level) {
      if (level < this.live || this.live < 0) {
        this.live = level;
        this.backoff[level] = 0;
        for (let i = level + 1; i < this.levels.length; i++) {
          if (this.levels[i]) { this.levels[i].close(); this.levels[i] = null; }
          clearTimeout(this.retries[i]);
        }
        this.el.conn.dataset.transport = TRANSPORT_NAMES[level];
        this.setConn(TRANSPORT_NAMES[level] === 'polling' ? 'polling' : 'live');
      }
    }

    refused(code, message) {
      if (code === 'token_expired' || code === 'bad_viewer_token') return this.expired();
      this.sending = null;
      this.showError(this.t('err_' + code) !== 'err_' + code ? this.t('err_' + code) : message || this.t('err_generic'));
      if (this.record) this.render(this.record);
    }

    // An HTTP call to the request's API: GET '' reads it, POST 'otp' etc. act on it.
    call(method, action, body) {
      const self = this;
      const url = this.base + '/api/requests/' + encodeURIComponent(this.request) + (action ? '/' + action : '');
      const init = { method: method, credentials: 'omit', headers: { Authorization: 'Bearer ' + this.token, Accept: 'application/json' } };
      if (body !== undefined) { init.headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }
      return fetch(url, init).then(function (resp) {
        return resp.json().catch(function () { return {}; }).then(function (data) {
          if (resp.ok) return action ? data.request : data;
          const code = data && data.error ? data.error.code : 'http_' + resp.status;
          const err = new Error(code);
          err.code = code;
          err.message = data && data.error ? data.error.message : '';
          if (resp.status === 404) { err.final = true; self.gone(); }
          if (resp.status === 401) { err.final = true; self.expired(); }
          throw err;
        });
      });
    }

    // -------------------------------------------------------------- actions

    act(type, extra) {
      if (this.finished || this.sending) return;
      const frame = Object.assign({ type: type }, extra || {});
      this.sending = type;
      this.sendingSeq = this.record ? Number(this.record.seq) || 0 : 0;
      this.showError('');
      this.tick();
      const socket = this.levels[0];
      if (this.live === 0 && socket && socket.send(frame)) return;
      const paths = { otp: ['otp', { otp: frame.otp }], resend_otp: ['resend-otp', undefined], cancel: ['cancel', undefined], input: ['input', { id: frame.id, value: frame.value }] };
      const self = this;
      const path = paths[type];
      this.call('POST', path[0], path[1]).then(function (record) {
        self.sending = null;
        self.apply(record, false);
        const poller = self.levels[self.live];
        if (poller && poller.soon) poller.soon();
      }, function (err) {
        if (err.final) return;
        self.refused(err.code, err.message);
      });
    }

    answer(prompt, value) {
      const frame = answerFrame(prompt, value);
      const type = frame.type;
      delete frame.type;
      this.act(type, frame);
    }

    // -------------------------------------------------------------- words and numbers

    t(key, params) {
      const template = (this.S && this.S.ui[key]) || key;
      const self = this;
      return template.replace(/\{(\w+)\}/g, function (m, k) {
        if (!params || params[k] === undefined) return m;
        return typeof params[k] === 'number' ? self.digits(params[k]) : String(params[k]);
      });
    }
    digits(value) {
      const s = String(value);
      return this.S && this.S.lang === 'fa' ? s.replace(/[0-9]/g, function (d) { return FA_DIGITS[d]; }) : s;
    }
    clock(seconds) {
      const s = Math.max(0, Math.round(seconds));
      return this.digits(Math.floor(s / 60) + ':' + String(s % 60).padStart(2, '0'));
    }
    percent(n) { return this.S && this.S.lang === 'fa' ? this.digits(n) + '٪' : n + '%'; }
    serverNow() { return Date.now() - this.offset; }

    fill(template, params, isolate) {
      const self = this;
      return template.replace(/\{(\w+)\}/g, function (m, k) {
        if (!params || params[k] === undefined || params[k] === null) return m;
        const v = typeof params[k] === 'number' ? self.digits(params[k]) : String(params[k]);
        return isolate ? '\u2068' + v + '\u2069' : v;
      });
    }
    messageKey(r) {
      const M = this.S.messages;
      const params = r.message_params && typeof r.message_params === 'object' ? r.message_params : {};
      if (r.message_key && M[r.message_key] && this.fill(M[r.message_key][0], params, false) === r.current_message) return r.message_key;
      for (const key in M) if (M[key][0] === r.current_message && M[key][0].indexOf('{') < 0) return key;
      return null;
    }
    messageText(r) {
      const key = this.messageKey(r);
      const params = r.message_params && typeof r.message_params === 'object' ? r.message_params : {};
      if (key) return this.fill(this.S.messages[key][1], params, this.S.lang === 'fa');
      const current = typeof r.current_message === 'string' ? r.current_message : '';
      if (this.S.lang === 'fa' && current && !/[\u0600-\u06FF]/.test(current)) {
        const step = this.steps(r).filter(function (s) { return s.name === r.step; })[0];
        return step ? step.label + '…' : '';
      }
      return current;
    }
    errorText(r) {
      const error = typeof r.error === 'string' ? r.error : '';
      const M = this.S.messages;
      for (const key in M) {
        const english = M[key][0];
        if (english === error && english.indexOf('{') < 0) return M[key][1];
        if (english.indexOf('{') < 0) continue;
        const names = [];
        const pattern = english.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{(\w+)\}/g, function (m, k) { names.push(k); return '([\\s\\S]*)'; });
        const found = new RegExp('^' + pattern + '$').exec(error);
        if (!found) continue;
        const params = {};
        names.forEach(function (k, i) { params[k] = found[i + 1]; });
        return this.fill(M[key][1], params, this.S.lang === 'fa');
      }
      return error;
    }
    steps(r) {
      const service = this.S.services[r.service_slug];
      return service ? service.steps : [];
    }
    label(key) { return this.S.labels[key] || String(key).replace(/_/g, ' ').replace(/^\w/, function (c) { return c.toUpperCase(); }); }
    scalar(value) {
      if (typeof value === 'boolean') return value ? '✓' : '✗';
      if (typeof value === 'number') {
        const text = Number.isInteger(value) ? value.toLocaleString('en-US') : String(Math.round(value * 100) / 100);
        return this.S.lang === 'fa' ? this.digits(text.replace(/,/g, '٬')) : text;
      }
      if (typeof value === 'string' && ISO.test(value) && !isNaN(Date.parse(value))) {
        // A moment, as the result page shows it (display._scalar): minutes, in UTC.
        const at = new Date(value).toISOString();
        return this.digits(at.slice(0, 10) + ' ' + at.slice(11, 16)) + ' UTC';
      }
      return value === null || value === undefined ? '' : String(value);
    }

    // -------------------------------------------------------------- rendering

    build() {
      const root = this.root;
      while (root.lastChild) root.removeChild(root.lastChild);
      const el = this.el = {
        title: h('p', { class: 'title', part: 'title' }),
        conn: h('span', { class: 'conn', part: 'connection', 'data-state': 'connecting' }),
        headline: h('p', { class: 'headline', part: 'headline', role: 'status', 'aria-live': 'polite' }),
        message: h('p', { class: 'message', part: 'message' }),
        bar: h('div', { class: 'bar', part: 'bar', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': '0' }),
        fill: h('div', { class: 'fill', part: 'fill' }),
        pct: h('span', { class: 'pct' }),
        eta: h('span', { class: 'eta' }),
        steps: h('ol', { class: 'steps', part: 'steps' }),
        prompt: h('div', { class: 'prompt-slot' }),
        error: h('div', { class: 'error', part: 'error', role: 'alert', hidden: true }),
        notice: h('div', { class: 'notice', part: 'notice', hidden: true }),
        result: h('div', { class: 'result', part: 'result', hidden: true }),
        actions: h('div', { class: 'actions' }),
        cancel: h('button', { class: 'danger', part: 'cancel', type: 'button', hidden: true }),
      };
      el.bar.appendChild(el.fill);
      el.actions.appendChild(el.cancel);
      root.appendChild(h('div', { class: 'root', part: 'root' }, [
        h('div', { class: 'top' }, [el.title, el.conn]),
        el.headline, el.message, el.bar, h('div', { class: 'meta' }, [el.pct, el.eta]),
        el.steps, el.prompt, el.error, el.notice, el.result, el.actions,
      ]));
      const self = this;
      el.cancel.addEventListener('click', function () { self.confirmCancel(); });
    }

    setConn(state) {
      if (!this.el || !this.S) return;
      this.el.conn.dataset.state = state;
      this.el.conn.textContent = this.t(state === 'live' && this.el.conn.dataset.transport === 'sse' ? 'conn_sse' : 'conn_' + state);
    }
    showError(text) { this.el.error.textContent = text || ''; this.el.error.hidden = !text; }
    onTick(fn) { this.ticks.push(fn); fn(); }
    // Focus a new prompt's input, unless the person is busy elsewhere on the host page.
    focusLater(node) {
      const active = document.activeElement;
      if (document.visibilityState === 'hidden' || (active && active !== document.body && active !== this)) return;
      setTimeout(function () { node.focus({ preventScroll: true }); }, 0);
    }

    confirmCancel() {
      const el = this.el;
      const self = this;
      if (el.actions.querySelector('.confirm')) return;
      const yes = h('button', { class: 'danger', type: 'button', text: this.t('cancel_yes') });
      const no = h('button', { class: 'secondary', type: 'button', text: this.t('cancel_no') });
      const box = h('div', { class: 'confirm notice', role: 'alertdialog' }, [h('p', { text: this.t('cancel_confirm') }), h('div', { class: 'row' }, [yes, no])]);
      el.cancel.hidden = true;
      el.actions.appendChild(box);
      yes.addEventListener('click', function () { box.remove(); self.act('cancel'); });
      no.addEventListener('click', function () { box.remove(); if (self.record) self.render(self.record); });
      no.focus();
    }

    apply(r, fresh) {
      if (!r || typeof r !== 'object' || (r.hash && r.hash !== this.request)) return;
      const seq = Number(r.seq) || 0;
      if (seq > 0 && seq < this.lastSeq && !fresh) return;
      if (seq > 0) this.lastSeq = seq;
      if (this.sending && seq > this.sendingSeq) this.sending = null;
      const previous = this.record;
      this.record = r;
      const promptChanged = !previous || previous.status !== r.status || JSON.stringify(promptOf(previous)) !== JSON.stringify(promptOf(r));
      this.render(r, promptChanged);
      if (r.status in TERMINAL && !this.finished) {
        this.finished = true;
        this.levels.forEach(function (l) { if (l) l.close(); });
        this.levels = [];
        this.retries.forEach(function (t) { clearTimeout(t); });
        this.setConn('live');
        this.el.conn.hidden = true;
        const detail = { request: this.request, status: r.status, result: r.result_data, error: r.error, record: r };
        this.dispatchEvent(new CustomEvent(r.status, { detail: detail, bubbles: true, composed: true }));
      }
    }

    render(r, promptChanged) {
      const el = this.el;
      const status = r.status in TERMINAL || r.status === 'waiting_otp' || r.status === 'waiting_input' || r.status === 'pending' ? r.status : 'processing';
      const progress = status === 'completed' ? 100 : Math.max(0, Math.min(100, Math.round(Number(r.progress) || 0)));
      this.setAttribute('data-status', status);
      const service = this.S.services[r.service_slug];
      el.title.textContent = service ? service.title : String(r.service_slug || '');
      el.headline.textContent = this.t('status_' + status) !== 'status_' + status ? this.t('status_' + status) : this.t('status_processing');
      el.message.textContent = this.messageText(r);
      el.message.hidden = status in TERMINAL || (status === 'waiting_otp' && QUIET_IN_OTP[this.messageKey(r)]);
      el.bar.setAttribute('aria-valuenow', String(progress));
      el.bar.setAttribute('aria-valuetext', this.percent(progress));
      el.fill.style.width = progress + '%';
      el.pct.textContent = this.percent(progress);
      const remaining = Number(r.estimated_remaining_time);
      this.eta = status in TERMINAL ? null : {
        value: isFinite(remaining) ? remaining : 0,
        at: Math.min(this.serverNow(), Date.parse(r.updated_at || '') || this.serverNow()),
        frozen: status === 'waiting_otp' ? 'paused' : status === 'waiting_input' ? 'paused_input' : null,
      };
      this.renderSteps(r, status);
      if (promptChanged !== false || !this.sending) this.renderPrompt(r);
      el.cancel.textContent = this.t('cancel');
      el.cancel.hidden = status in TERMINAL || !this.rights.cancel || !!el.actions.querySelector('.confirm');
      el.cancel.disabled = this.sending === 'cancel';
      if (status === 'failed') this.showError(this.errorText(r));
      el.notice.hidden = status !== 'cancelled';
      if (status === 'cancelled') el.notice.textContent = this.t('cancelled_text');
      this.renderResult(r, status);
      this.tick();
    }

    renderSteps(r, status) {
      const el = this.el;
      const names = this.steps(r);
      const index = names.map(function (s) { return s.name; }).indexOf(r.step);
      const offsets = r.steps && typeof r.steps === 'object' ? r.steps : {};
      while (el.steps.lastChild) el.steps.removeChild(el.steps.lastChild);
      const self = this;
      names.forEach(function (s, i) {
        let state;
        if (status === 'completed') state = 'done';
        else if (status === 'pending' || index < 0 || i > index) state = 'todo';
        else if (i < index) state = 'done';
        else if (status === 'failed') state = 'failed';
        else if (status === 'cancelled') state = 'stopped';
        else state = 'current';
        const at = offsets[s.name];
        const li = h('li', { class: 'step step-' + state, part: 'step step-' + state, 'data-step': s.name }, [
          h('span', { text: s.label }),
          h('span', { class: 'step-at', text: typeof at === 'number' && state !== 'todo' ? self.clock(at) : '' }),
        ]);
        if (state === 'current') li.setAttribute('aria-current', 'step');
        el.steps.appendChild(li);
      });
    }

    renderPrompt(r) {
      const slot = this.el.prompt;
      const prompt = promptOf(r);
      const shown = slot.firstChild;
      const key = prompt ? JSON.stringify(prompt) : '';
      if (shown && shown.dataset.key === key && !(this.sending === null && shown.querySelector('button[type=submit]:disabled'))) return;
      this.ticks = [];
      while (slot.lastChild) slot.removeChild(slot.lastChild);
      if (!prompt) return;
      const render = PROMPTS[prompt.kind];
      if (!render) return;  // a kind this version does not know: the person answers elsewhere
      const node = render(this, prompt);
      node.dataset.key = key;
      slot.appendChild(node);
    }

    renderResult(r, status) {
      const box = this.el.result;
      if (status !== 'completed' || this.hasAttribute('no-result')) { box.hidden = true; return; }
      if (box.dataset.seq === String(r.seq)) return;
      box.dataset.seq = String(r.seq);
      while (box.lastChild) box.removeChild(box.lastChild);
      box.appendChild(h('h3', { text: this.t('result_title') }));
      const result = r.result_data && typeof r.result_data === 'object' && !Array.isArray(r.result_data) ? r.result_data : {};
      const order = Object.keys(this.S.labels);
      const keys = Object.keys(result).slice(0, 50).sort(function (a, b) {
        const ia = order.indexOf(a), ib = order.indexOf(b);
        return (ia < 0 ? order.length : ia) - (ib < 0 ? order.length : ib);
      });
      const dl = h('dl');
      const self = this;
      if (!keys.length) box.appendChild(h('p', { text: this.t('result_none') }));
      keys.forEach(function (k) {
        const value = result[k];
        let dd;
        if (Array.isArray(value) && value.length && value.every(function (v) { return v && typeof v === 'object' && !Array.isArray(v); })) {
          const cols = [];
          value.forEach(function (v) { Object.keys(v).forEach(function (c) { if (cols.indexOf(c) < 0 && cols.length < 8) cols.push(c); }); });
          dd = h('dd', {}, [h('table', {}, [
            h('thead', {}, [h('tr', {}, cols.map(function (c) { return h('th', { text: self.label(c) }); }))]),
            h('tbody', {}, value.slice(0, 100).map(function (v) {
              return h('tr', {}, cols.map(function (c) { return h('td', { text: self.scalar(v[c]) }); }));
            })),
          ])]);
        } else if (Array.isArray(value)) {
          dd = h('dd', {}, [value.length ? h('ul', {}, value.slice(0, 100).map(function (v) { return h('li', { text: self.scalar(v) }); })) : h('span', { text: '—' })]);
        } else if (value && typeof value === 'object') {
          dd = h('dd', {}, [h('ul', {}, Object.keys(value).slice(0, 50).map(function (c) { return h('li', { text: self.label(c) + ': ' + self.scalar(value[c]) }); }))]);
        } else if (typeof value === 'string' && /^https?:\/\/[^\s"'<>]{1,2000}$/.test(value)) {
          dd = h('dd', {}, [h('a', { href: value, target: '_blank', rel: 'noopener noreferrer', class: 'ltr', text: value })]);
        } else {
          dd = h('dd', { text: self.scalar(value) });
        }
        dl.appendChild(h('dt', { text: self.label(k) }));
        dl.appendChild(dd);
      });
      if (keys.length) box.appendChild(dl);
      box.hidden = false;
    }

    tick() {
      const el = this.el;
      if (!el || !this.S) return;
      if (!this.eta) {
        el.eta.textContent = '';
      } else if (this.eta.frozen) {
        el.eta.textContent = this.t(this.eta.frozen);
      } else {
        const left = this.eta.value - (this.serverNow() - this.eta.at) / 1000;
        el.eta.textContent = left >= 1 ? this.t('time_left') + ' ' + this.clock(left) : this.t('almost_done');
      }
      this.ticks.forEach(function (fn) { fn(); });
    }

    gone() {
      this.finished = true;
      this.stop();
      this.setAttribute('data-status', 'failed');
      this.el.conn.hidden = true;
      this.el.headline.textContent = this.t('e404_title');
      this.el.message.hidden = true;
      this.el.prompt.textContent = '';
      this.el.cancel.hidden = true;
      this.showError(this.t('expired_text'));
    }

    expired() {
      // The viewer token ran out: the host page may set a fresh one (the `token` attribute).
      this.stop();
      this.el.prompt.textContent = '';
      this.el.cancel.hidden = true;
      this.el.conn.hidden = true;
      this.showError(this.t('embed_token_expired'));
      this.dispatchEvent(new CustomEvent('token-expired', { detail: { request: this.request }, bubbles: true, composed: true }));
    }
  }

  window.customElements.define('longrun-progress', LongrunProgress);
})();
