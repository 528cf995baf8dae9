(() => {
'use strict';

/* ---------------------------------------------------------------- constants */
const API = '/api/osago/requests';
const NEW_DRIVER_KBM_DEFAULT = '3';
const streamUrl = id => `${API}/${encodeURIComponent(id)}/stream`;
const quotesUrl = id => `${API}/${encodeURIComponent(id)}/quotes`;

// Sample request (docs/examples/request.json), for the "fill with an example"
// button only: the page opens empty, consents unticked. start_date is filled
// with "tomorrow"; the server stamps the consent time.
const SAMPLE = {
  policy: { usage_period_months: 12, purpose: 'personal' },
  vehicle: { category: 'B', make: 'Lada', model: 'Vesta', year: 2021, engine_power_hp: 106,
    vin: 'XTAGFL110MY123456', plate: 'А123ВС777', has_trailer: false,
    document: { kind: 'sts', series: '99АА', number: '123456', issue_date: '2021-06-15' } },
  owner: { full_name: 'Иванов Иван Иванович', birth_date: '1985-03-14',
    passport: { series: '4510', number: '123456', issue_date: '2005-04-01' },
    address: { region_code: '77', city: 'Москва', street: 'ул. Тверская', house: '1' } },
  drivers: { unlimited: false, list: [ { full_name: 'Иванов Иван Иванович', birth_date: '1985-03-14',
    licence: { series: '7700', number: '123456' }, experience_start: '2005-06-01', kbm_class: '5' } ] },
  contact: { phone: '79161234567', email: 'ivanov@example.ru' },
  consent: {}
};
// What an empty form starts from: no personal data, consents unticked.
const EMPTY = {
  policy: { usage_period_months: 12, purpose: 'personal' },
  vehicle: { category: 'B', document: { kind: 'sts' } },
  owner: { passport: {}, address: { region_code: '77' } },
  drivers: { unlimited: false, list: [ { kbm_class: NEW_DRIVER_KBM_DEFAULT } ] },
  contact: {},
  consent: {}
};
// Every region as [code, name, [settlements the tariff names]], filled in
// by the server from the territory table it prices by; a settlement it does
// not name takes the region's "other settlements" coefficient.
const REGIONS = /*TERRITORIES*/[];

// Bonus-malus classes and their coefficients (Bank of Russia scale, 2022+).
const KBM = [['M', '3,92'], ['0', '2,94'], ['1', '2,25'], ['2', '1,76'], ['3', '1,17'], ['4', '1,00'], ['5', '0,91'],
  ['6', '0,83'], ['7', '0,78'], ['8', '0,74'], ['9', '0,68'], ['10', '0,63'], ['11', '0,57'], ['12', '0,52'], ['13', '0,46']];
const NEW_DRIVER_KBM = NEW_DRIVER_KBM_DEFAULT;

const INSURER_NAMES = { swift: 'Свифт Страхование', steady: 'Надёжная СК', patient: 'Терпение Ре',
  legacy: 'Старая Гвардия', flaky: 'Нестабильная СК', strict: 'Строгий Андеррайтер', addon: 'Допы Плюс', picky: 'Дотошная СК' };
const FAIL_TEXT = { timeout: 'Не ответила за 60 секунд', unavailable: 'Сервис страховой недоступен',
  circuit_open: 'Сервис страховой недоступен', rate_limited: 'Страховая перегружена',
  bad_response: 'Ошибка ответа страховой', rejected: 'Нужны дополнительные данные' };

// [key in quote.coefficients, short label, explanation]
const COEFS = [['tb_kopecks', 'ТБ', 'Базовый тариф'], ['kt', 'КТ', 'Территория использования'],
  ['kbm', 'КБМ', 'Бонус-малус (безаварийность)'], ['kvs', 'КВС', 'Возраст и стаж водителей'],
  ['ko', 'КО', 'Ограничение списка водителей'], ['km', 'КМ', 'Мощность двигателя'],
  ['ks', 'КС', 'Период использования'], ['kn', 'КН', 'Грубые нарушения'], ['kpr', 'КПр', 'Использование с прицепом']];

/* ---------------------------------------------------------------- helpers */
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const esc = s => String(s == null ? '' : s).replace(/[&<>"']/g, c => ESC[c]);

/** Integer kopecks -> "12 345,67 ₽". Integer arithmetic only (no float money). */
function formatRub(kopecks) {
  const k = Math.trunc(Number(kopecks));
  if (!Number.isFinite(k)) return '—';
  const abs = Math.abs(k);
  const rub = Math.trunc(abs / 100), kop = abs % 100;
  const grouped = String(rub).replace(/\B(?=(\d{3})+(?!\d))/g, '\u00a0');
  return (k < 0 ? '−' : '') + grouped + ',' + String(kop).padStart(2, '0') + '\u00a0₽';
}
const formatCoef = x => (typeof x === 'number' ? String(x).replace('.', ',') : esc(x ?? '—'));

/** Russian plural: plural(5, 'предложение', 'предложения', 'предложений'). */
function plural(n, one, few, many) {
  const m10 = n % 10, m100 = n % 100;
  const w = m10 === 1 && m100 !== 11 ? one : m10 >= 2 && m10 <= 4 && (m100 < 12 || m100 > 14) ? few : many;
  return `${n} ${w}`;
}
// Tomorrow by the Moscow calendar (UTC+3 all year), the date the server
// counts start dates in: a buyer west of Moscow late in the evening, or a
// browser on UTC after 21:00, is already a day behind it, and its own
// "tomorrow" would be refused as today.
const MOSCOW_OFFSET_MS = 3 * 3600 * 1000;
function tomorrow() {
  const d = new Date(Date.now() + MOSCOW_OFFSET_MS + 24 * 3600 * 1000);
  return `${d.getUTCFullYear()}-${String(d.getUTCMonth() + 1).padStart(2, '0')}-${String(d.getUTCDate()).padStart(2, '0')}`;
}
function formatWhen(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return '';
  const time = d.toLocaleTimeString('ru-RU', { hour: '2-digit', minute: '2-digit' });
  return d.toDateString() === new Date().toDateString() ? time
    : d.toLocaleDateString('ru-RU', { day: 'numeric', month: 'long' }) + ', ' + time;
}

/** "a.b[0].c" -> ['a', 'b', 0, 'c'] */
function tokens(path) {
  const out = [];
  path.replace(/([^.[\]]+)|\[(\d+)\]/g, (_, key, idx) => { out.push(idx !== undefined ? Number(idx) : key); return ''; });
  return out;
}
function getPath(obj, path) {
  return tokens(path).reduce((o, k) => (o == null ? undefined : o[k]), obj);
}
function setPath(obj, path, value) {
  const t = tokens(path);
  let o = obj;
  for (let i = 0; i < t.length - 1; i++) {
    if (o[t[i]] == null) o[t[i]] = typeof t[i + 1] === 'number' ? [] : {};
    o = o[t[i]];
  }
  o[t[t.length - 1]] = value;
}
async function readJson(res) {
  try { return JSON.parse(await res.text()); } catch { return null; }
}
function parseData(e) { try { return JSON.parse(e.data); } catch { return null; } }
const insurerName = id => INSURER_NAMES[id] || (id ? id.charAt(0).toUpperCase() + id.slice(1) : '—');

/** Only allow http(s) links from the server (no javascript: URLs). */
function safeUrl(u) {
  try { const url = new URL(u, location.href); return /^https?:$/.test(url.protocol) ? url.href : null; } catch { return null; }
}

/* ---------------------------------------------------------------- elements */
const form = $('#quote-form');
const submitBtn = $('#submit');
const summaryBox = $('#summary');
const driversList = $('#drivers-list');
const resultsCard = $('#results-card');
const resultsEl = $('#results');
const resEmpty = $('#res-empty');
const resSummary = $('#res-summary');
const rangeEl = $('#lawful-range');
const countdownEl = $('#countdown');
const progressEl = $('#progress');
const connEl = $('#conn');

/* ---------------------------------------------------------------- form */
const kbmOptions = () => KBM.map(([c, k]) => `<option value="${c}">${c} (КБМ ${k})</option>`).join('');
$('#f-period').innerHTML = Array.from({ length: 10 }, (_, i) => i + 3)
  .map(m => `<option value="${m}">${plural(m, 'месяц', 'месяца', 'месяцев')}</option>`).join('');
$('#f-region').innerHTML = REGIONS.map(([c, n]) => `<option value="${c}">${c} — ${esc(n)}</option>`).join('');
// The city field suggests the settlements the chosen region's table names.
function fillSettlements() {
  const region = REGIONS.find(([c]) => c === $('#f-region').value);
  $('#f-city-list').innerHTML = (region ? region[2] : []).map(s => `<option value="${esc(s)}"></option>`).join('');
}
$('#f-region').addEventListener('change', fillSettlements);
$('#f-okbm').innerHTML = '<option value="">Не указан</option>' + kbmOptions();

let driverSeq = 0; // unique suffix for driver input ids (never reused)
function addDriver() {
  const uid = ++driverSeq;
  const f = (rel, label, attrs) => `<div class="field"><label for="d${uid}-${rel}">${label}</label>` +
    `<input id="d${uid}-${rel}" data-rel="${rel}" ${attrs}></div>`;
  const fs = document.createElement('fieldset');
  fs.className = 'driver';
  fs.innerHTML = `<legend>Водитель <span class="num"></span></legend><div class="grid">
    <div class="field wide"><label for="d${uid}-full_name">ФИО</label>
      <input id="d${uid}-full_name" data-rel="full_name" autocomplete="off" required></div>
    ${f('birth_date', 'Дата рождения', 'type="date" required')}
    ${f('licence.series', 'Серия ВУ', 'inputmode="numeric" autocomplete="off" required')}
    ${f('licence.number', 'Номер ВУ', 'inputmode="numeric" autocomplete="off" required')}
    ${f('experience_start', 'Начало стажа', 'type="date" required')}
    <div class="field"><label for="d${uid}-kbm_class">Класс КБМ</label>
      <select id="d${uid}-kbm_class" data-rel="kbm_class">${kbmOptions()}</select></div>
    </div><div class="driver-actions"><button type="button" class="btn link remove-driver">Удалить водителя</button></div>`;
  fs.querySelector('select').value = NEW_DRIVER_KBM; // new drivers start in class 3
  driversList.append(fs);
  renumberDrivers();
  return fs;
}

/** Keep data-path indexes, legends and remove buttons in sync with list order. */
function renumberDrivers() {
  const cards = Array.from(driversList.children);
  cards.forEach((fs, i) => {
    fs.dataset.path = `drivers.list[${i}]`;
    fs.querySelector('.num').textContent = i + 1;
    $$('[data-rel]', fs).forEach(el => { el.dataset.path = `drivers.list[${i}].${el.dataset.rel}`; });
    const rm = fs.querySelector('.remove-driver');
    rm.hidden = cards.length === 1;
    rm.setAttribute('aria-label', `Удалить водителя ${i + 1}`);
  });
}
$('#add-driver').addEventListener('click', () => { addDriver().querySelector('input').focus(); });
driversList.addEventListener('click', e => {
  const btn = e.target.closest('.remove-driver');
  if (!btn) return;
  btn.closest('fieldset').remove();
  renumberDrivers();
  $('#add-driver').focus();
});
const unlimitedBox = $('#f-unlim');
function syncUnlimited() {
  $('#drivers-box').hidden = unlimitedBox.checked;
  $('#owner-kbm-box').hidden = !unlimitedBox.checked;
}
unlimitedBox.addEventListener('change', syncUnlimited);

// «Первый водитель — собственник»: the first driver's name and birth date
// follow the owner's while it is ticked (read-only there).
const ownerDrives = $('#f-owner-drives');
function syncOwnerDriver() {
  const card = $('fieldset.driver', driversList);
  if (!card) return;
  for (const rel of ['full_name', 'birth_date']) {
    const input = $(`input[data-rel="${rel}"]`, card);
    const owner = $(`input[data-path="owner.${rel}"]`, form);
    if (!input || !owner) continue;
    input.readOnly = ownerDrives.checked;
    if (ownerDrives.checked) input.value = owner.value;
  }
}
ownerDrives.addEventListener('change', syncOwnerDriver);
for (const rel of ['full_name', 'birth_date']) {
  const owner = $(`input[data-path="owner.${rel}"]`, form);
  if (owner) owner.addEventListener('input', syncOwnerDriver);
}

/** All value-bearing controls (inputs/selects carrying a data-path). */
const fieldEls = () => $$('input[data-path], select[data-path]', form);
function fillForm(data) {
  driversList.textContent = '';
  const n = Math.max(1, (data.drivers.list || []).length);
  for (let i = 0; i < n; i++) addDriver();
  for (const el of fieldEls()) {
    if (el.type === 'hidden') continue; // consent text versions: fixed by the page
    const v = getPath(data, el.dataset.path);
    if (el.type === 'checkbox') el.checked = !!v;
    else if (v != null) el.value = String(v);
    else if (el.tagName !== 'SELECT' || el.dataset.optional !== undefined) el.value = '';
  }
  if (!data.policy.start_date) $('#f-start').value = tomorrow();
  syncOwnerDriver();
  $('#f-start').min = tomorrow(); // a policy starts tomorrow at the earliest
  syncUnlimited();
  fillSettlements();
}
$('#fill-sample').addEventListener('click', () => { clearErrors(); fillForm(SAMPLE); });

// Cyrillic letters a plate uses and their Latin look-alikes: the server
// makes the same VIN (Latin) and plate (Cyrillic) canonical
// (osago_core::request::normalize_vin / normalize_plate).
const CYR = 'АВЕКМНОРСТУХ', LAT = 'ABEKMHOPCTYX';
const swap = (s, from, to) => Array.from(s).map(c => { const i = from.indexOf(c); return i < 0 ? c : to[i]; }).join('');
const NORM = {
  vin: v => swap(v.replace(/\s+/g, '').toUpperCase(), CYR, LAT),
  plate: v => swap(v.replace(/\s+/g, '').toUpperCase(), LAT, CYR)
};
// Shown canonical as soon as the buyer leaves the field.
for (const el of $$('input[data-norm="vin"], input[data-norm="plate"]', form)) {
  el.addEventListener('blur', () => { el.value = NORM[el.dataset.norm](el.value); });
}

/** Client-side checks only for things JSON can't carry (non-integer numbers). */
function localErrors() {
  return fieldEls().filter(el => el.dataset.type === 'int' && !/^\d+$/.test(el.value.trim()))
    .map(el => ({ path: el.dataset.path, message: 'Укажите целое число' }));
}

/** Build the request JSON from the form. Optional empty inputs are omitted. */
function collectRequest() {
  const body = {};
  for (const el of fieldEls()) {
    let v;
    if (el.type === 'checkbox') v = el.checked;
    else {
      v = el.value.trim();
      if (v === '' && el.dataset.optional !== undefined) continue;
      if (el.dataset.type === 'int') v = Number(v);
      else if (NORM[el.dataset.norm]) v = NORM[el.dataset.norm](v);
      else if (el.dataset.norm === 'phone') {
        v = v.replace(/\D/g, '');
        if (v.length === 11 && v[0] === '8') v = '7' + v.slice(1); // 8XXXXXXXXXX -> 7XXXXXXXXXX
        else if (v.length === 10 && v[0] === '9') v = '7' + v;
      }
    }
    setPath(body, el.dataset.path, v);
  }
  if (body.drivers.unlimited) body.drivers.list = [];
  else { delete body.owner.kbm_class; body.drivers.list = body.drivers.list || []; }
  return body;
}

/* ---------------------------------------------------------------- errors */
let errSeq = 0;
function clearFieldError(el) {
  const host = el.closest('.field') || el;
  $$(':scope > .err', host).forEach(p => p.remove());
  el.removeAttribute('aria-invalid');
  // restore a static hint description, if any
  const hint = $(':scope > .hint', host);
  if (hint) el.setAttribute('aria-describedby', hint.id); else el.removeAttribute('aria-describedby');
}
function clearErrors() {
  $$('[aria-invalid]', form).forEach(clearFieldError);
  $$('.err', form).forEach(p => p.remove());
  summaryBox.hidden = true;
  summaryBox.textContent = '';
}
form.addEventListener('input', e => { if (e.target.matches('[aria-invalid]')) clearFieldError(e.target); });

/** Attach a message to the element whose data-path equals `path`; returns that element or null. */
function attachError(path, message) {
  const el = $$('[data-path]', form).find(x => x.dataset.path === path);
  if (!el || el.closest('[hidden]')) return null;
  const isControl = el.matches('input, select');
  const host = isControl ? (el.closest('.field') || el.parentElement) : el;
  let p = $(':scope > .err', host);
  if (!p) {
    p = document.createElement('p');
    p.className = 'err';
    p.id = `err-${++errSeq}`;
    host.append(p);
  }
  p.textContent = p.textContent ? `${p.textContent}; ${message}` : message;
  if (isControl) {
    el.setAttribute('aria-invalid', 'true');
    const hint = $(':scope > .hint', host);
    el.setAttribute('aria-describedby', hint ? `${p.id} ${hint.id}` : p.id);
  }
  return el;
}

/** Human label for an element: "Водитель 1 · ФИО". */
function labelFor(el) {
  const lbl = el.id ? $(`label[for="${el.id}"]`) : null;
  const legend = el.closest('fieldset') && el.closest('fieldset').querySelector('legend');
  const parts = [legend && legend.textContent.trim(), lbl && lbl.textContent.trim()].filter(Boolean);
  return parts.join(' · ');
}

/** Show the summary box. items: [{message, path, target}] */
function showSummary(title, detail, items = []) {
  summaryBox.textContent = '';
  const h = document.createElement('strong');
  h.textContent = title;
  summaryBox.append(h);
  if (detail) { const p = document.createElement('p'); p.textContent = detail; summaryBox.append(p); }
  if (items.length) {
    const ul = document.createElement('ul');
    for (const it of items) {
      const li = document.createElement('li');
      if (it.target) {
        const a = document.createElement('a');
        a.href = '#' + (it.target.id || '');
        a.textContent = `${labelFor(it.target)}: ${it.message}`;
        a.addEventListener('click', ev => {
          ev.preventDefault(); // keep #r=… hash semantics intact
          it.target.scrollIntoView({ block: 'center' });
          if (it.target.focus) it.target.focus({ preventScroll: true });
        });
        li.append(a);
      } else {
        li.textContent = it.message + ' ';
        if (it.path) { const s = document.createElement('span'); s.className = 'path'; s.textContent = `(${it.path})`; li.append(s); }
      }
      ul.append(li);
    }
    summaryBox.append(ul);
  }
  summaryBox.hidden = false;
  summaryBox.scrollIntoView({ block: 'start', behavior: 'smooth' });
  summaryBox.focus({ preventScroll: true });
}
// The server's problems in Russian, by their type (docs/openapi.json): its
// own title and detail are English, for developers.
const PROBLEM_RU = {
  '/problems/validation-error': ['Проверьте данные формы', 'Исправьте поля, отмеченные ниже.'],
  '/problems/malformed-json': ['Некорректный запрос', 'Сервер не понял данные формы. Обновите страницу и попробуйте снова.'],
  '/problems/overloaded': ['Сервис перегружен', 'Сейчас слишком много расчётов. Попробуйте через минуту.'],
  '/problems/rate-limited': ['Слишком много расчётов подряд', '']
};
/** A field error's message for the buyer: the server's Russian one (the
 *  page's own checks write theirs in Russian already). */
const ruMessage = e => String(e.message_ru || e.message || 'Некорректное значение');
function showValidation(problem, fallbackTitle) {
  const errors = (problem && Array.isArray(problem.errors)) ? problem.errors : [];
  const items = errors.map(e => ({ message: ruMessage(e), path: e.path,
    target: e.path ? attachError(String(e.path), ruMessage(e)) : null }));
  const ru = PROBLEM_RU[problem && problem.type] || [];
  showSummary(ru[0] || fallbackTitle || 'Проверьте данные формы', ru[1] || '', items);
}
const STATUS_TITLES = { 400: 'Некорректный запрос', 404: 'Не найдено', 413: 'Слишком большой запрос',
  429: 'Слишком много запросов', 500: 'Ошибка сервера', 502: 'Сервис временно недоступен',
  503: 'Сервис временно недоступен', 504: 'Сервер не ответил вовремя' };
function showProblem(res, problem) {
  const ru = PROBLEM_RU[problem && problem.type] || [];
  const title = ru[0] || STATUS_TITLES[res.status] ||
    (res.status >= 500 ? 'Сервис временно недоступен' : `Ошибка ${res.status}`);
  let detail = ru[1] || '';
  const retry = Number(res.headers.get('Retry-After'));
  if (res.status === 429 && retry > 0) detail += (detail ? ' ' : '') + `Повторите через ${plural(retry, 'секунду', 'секунды', 'секунд')}.`;
  if (!detail && res.status >= 500) detail = 'Попробуйте ещё раз через несколько минут.';
  showSummary(title, detail);
}

/* ---------------------------------------------------------------- submit */
form.addEventListener('submit', async e => {
  e.preventDefault();
  clearErrors();
  const local = localErrors();
  if (local.length) { showValidation({ errors: local }); return; }
  const body = collectRequest();
  submitBtn.disabled = true;
  submitBtn.textContent = 'Отправляем…';
  try {
    const res = await fetch(API, { method: 'POST', body: JSON.stringify(body),
      headers: { 'Content-Type': 'application/json', Accept: 'application/json, application/problem+json' } });
    const data = await readJson(res);
    if ((res.status === 201 || res.status === 202) && data && data.request_id) startRequest(data);
    else if (res.status === 422) showValidation(data);
    else showProblem(res, data);
  } catch {
    showSummary('Нет связи с сервером', 'Проверьте подключение к интернету и попробуйте ещё раз.');
  } finally {
    submitBtn.disabled = false;
    submitBtn.textContent = 'Рассчитать стоимость';
  }
});

/* ---------------------------------------------------------------- results state */
const state = {
  requestId: null,
  deadline: NaN,      // ms since epoch
  es: null,           // current EventSource
  insurers: new Map(),// insurer_id -> latest insurer object (highest version)
  rows: new Map(),    // insurer_id -> <li>
  total: 0,           // insurers_total
  finished: false,
  timedOut: false,    // deadline passed: pending rows shown as «нет ответа»
  timer: null,        // countdown interval
  resync: null,       // pending resync timeout
  retries: 0
};
function resetResults() {
  closeStream();
  clearInterval(state.timer);
  clearTimeout(state.resync);
  Object.assign(state, { requestId: null, deadline: NaN, total: 0, finished: false, timedOut: false,
    timer: null, resync: null, retries: 0 });
  state.insurers.clear();
  state.rows.clear();
  resultsEl.textContent = '';
  rangeEl.hidden = true;
  rangeEl.textContent = '';
  resSummary.hidden = true;
  resEmpty.hidden = false;
  resEmpty.textContent = 'Ждём первые ответы…';
  progressEl.textContent = '';
  countdownEl.textContent = '';
  setConn(null);
}
function showResults() {
  form.hidden = true;
  resultsCard.hidden = false;
  resultsCard.scrollIntoView({ block: 'start' });
  // Keyboard and screen-reader users land on the results, not on a
  // button that has just disappeared.
  $('#res-h').focus({ preventScroll: true });
}
const hashId = () => { const m = /(?:^#|&)r=([^&]+)/.exec(location.hash); return m ? decodeURIComponent(m[1]) : null; };
const clearHash = () => history.replaceState(null, '', location.pathname + location.search);

/** Called after a successful POST. */
function startRequest(info) {
  resetResults();
  state.requestId = info.request_id;
  state.deadline = Date.parse(info.deadline_at);
  showLawfulRange(info.lawful_range);
  // Kept for this tab only, so a refresh shows it again (no personal data).
  try { if (info.lawful_range) sessionStorage.setItem('range:' + info.request_id, JSON.stringify(info.lawful_range)); } catch { /* storage off */ }
  location.hash = 'r=' + encodeURIComponent(info.request_id);
  showResults();
  startCountdown();
  openStream(info.stream_url || streamUrl(info.request_id));
}

/** The lawful price range for these data, shown before any insurer answers. */
function showLawfulRange(range) {
  if (!range || !(Number(range.min_kopecks) > 0)) return;
  rangeEl.textContent = `Цена ОСАГО по закону для ваших данных: от ${formatRub(range.min_kopecks)} до ${formatRub(range.max_kopecks)}. ` +
    'Страховщик вправе выбрать цену только в этих пределах. ' +
    'Класс бонус-малус (КБМ) страховщик проверит по базе АИС ОСАГО, поэтому итоговая цена может отличаться от расчётной.';
  rangeEl.hidden = false;
}

/** «Новый расчёт»: drop results and hash, show the (still filled) form again. */
function newCalc() {
  resetResults();
  clearHash();
  summaryBox.hidden = true;
  resultsCard.hidden = true;
  form.hidden = false;
  form.scrollIntoView({ block: 'start' });
  submitBtn.focus({ preventScroll: true });
}
$('#new-calc').addEventListener('click', newCalc);

/* ---------------------------------------------------------------- rows */
/** Merge one insurer state (SSE event or snapshot item); older/equal versions are ignored. */
function applyInsurer(d) {
  if (!d || !d.insurer_id) return;
  if (d.request_id && d.request_id !== state.requestId) return; // stale stream
  const cur = state.insurers.get(d.insurer_id);
  if (cur && !(Number(d.version) > Number(cur.version))) return; // keep only the newest version
  state.insurers.set(d.insurer_id, d);
  if (d.insurers_total) state.total = d.insurers_total;
  renderRow(d.insurer_id);
  arrange();
}
/** Create or update the <li> for one insurer, keeping its element (and open <details>) stable. */
function renderRow(id) {
  const d = state.insurers.get(id);
  let li = state.rows.get(id);
  if (!li) {
    li = document.createElement('li');
    li.dataset.id = id;
    li.className = 'enter'; // fade-in once; removed so later moves don't replay it
    li.addEventListener('animationend', () => li.classList.remove('enter'), { once: true });
    state.rows.set(id, li);
    resultsEl.append(li);
  }
  const wasOpen = !!(li.querySelector('details') && li.querySelector('details').open);
  const noAnswer = d.status === 'pending' && state.timedOut;
  const keep = ['best', 'enter'].filter(c => li.classList.contains(c)).map(c => ' ' + c).join('');
  li.className = `row st-${d.status}` + (noAnswer ? ' noans' : '') + keep;
  li.innerHTML = rowHtml(d, noAnswer);
  const det = li.querySelector('details');
  if (det && wasOpen) det.open = true;
}
/** The form's labels of the fields an insurer asked for ("insurer needs
 *  more data: a.b, c.d"), never the raw paths. */
function neededFields(reason) {
  const m = /needs more data: (.+)$/.exec(String(reason || ''));
  if (!m) return [];
  return m[1].split(',').map(p => p.trim()).map(path => {
    const el = $$('[data-path]', form).find(x => x.dataset.path === path);
    return el ? labelFor(el) : null;
  }).filter(Boolean);
}
/** Inner HTML of a row. Every server-provided string goes through esc(). */
function rowHtml(d, noAnswer) {
  let status = '', price = '', act = '', more = '';
  if (d.status === 'quoted' && d.quote) {
    const q = d.quote;
    const addOns = Array.isArray(q.add_ons) ? q.add_ons : [];
    const mandatory = addOns.filter(a => a.mandatory);
    const mandatorySum = mandatory.reduce((s, a) => s + Math.trunc(Number(a.price_kopecks) || 0), 0);
    price = `<span class="amount">${formatRub(q.premium_kopecks)}</span>` +
      (mandatory.length ? `<small>+ обязательные опции ${formatRub(mandatorySum)}</small>` : '');
    const verdict = q.price_check && q.price_check.verdict;
    const flag = verdict === 'below_minimum'
      ? '<p><span class="badge tag-bad price-flag">Цена ниже законного минимума</span> Так не бывает при верных данных: возможно, страховщик посчитал по другим данным или показывает цену-приманку, по которой полис не продадут.</p>'
      : verdict === 'above_maximum'
        ? '<p><span class="badge tag-bad price-flag">Цена выше законного максимума</span> Закон не позволяет продать полис по такой цене.</p>'
        : '';
    status = flag + (q.valid_until ? `<p>Предложение действует до ${esc(formatWhen(q.valid_until))}</p>` : '') +
      (q.message ? `<p class="muted">Комментарий страховщика: «${esc(q.message)}»</p>` : '') +
      (mandatory.length ? '<p><span class="badge tag-warn">есть обязательные опции</span> ' +
        'Продажу ОСАГО нельзя обуславливать покупкой других услуг: от навязанной опции вы вправе отказаться. ' +
        'Поэтому такое предложение не получает отметку «Лучшая цена».</p>' : '');
    const url = q.purchase_url ? safeUrl(q.purchase_url) : null;
    if (url) act = `<a class="btn primary" href="${esc(url)}" target="_blank" rel="noopener noreferrer">Оформить</a>`;
    const c = q.coefficients || {};
    const rows = COEFS.map(([k, short, title]) => `<tr><th scope="row"><abbr title="${esc(title)}">${short}</abbr></th>` +
      `<td>${esc(title)}</td><td class="v">${k === 'tb_kopecks' ? formatRub(c[k]) : formatCoef(c[k])}</td></tr>`).join('');
    const addOnList = addOns.length ? `<p><strong>Дополнительные опции</strong></p><ul class="addons">` + addOns.map(a =>
      `<li>${esc(a.name)} — ${formatRub(a.price_kopecks)}` +
      (a.mandatory ? ` <span class="badge tag-warn">обязательная опция</span>` : '') + '</li>').join('') + '</ul>' : '';
    more = `<details class="more"><summary>Расчёт и опции</summary>
      <p class="formula">Премия = ТБ × КТ × КБМ × КВС × КО × КМ × КС × КН × КПр</p>
      <table class="coefs"><tbody>${rows}</tbody></table>
      ${q.capped ? '<p>Премия ограничена предельным размером, установленным законом.</p>' : ''}${addOnList}</details>`;
  } else if (d.status === 'pending') {
    status = noAnswer ? '<span class="badge tag-muted">нет ответа</span>'
      : '<span class="spinner" aria-hidden="true"></span>ждём ответа…';
  } else if (d.status === 'declined') {
    status = '<span class="badge tag-bad">Страховщик отказал</span>' +
      (d.reason ? `<p class="muted">Комментарий страховщика: «${esc(d.reason)}»</p>` : '');
  } else { // failed (or an unexpected status)
    const text = FAIL_TEXT[d.error_kind] || 'Не удалось получить предложение';
    const fields = d.error_kind === 'rejected' ? neededFields(d.reason) : [];
    status = `<span class="badge tag-bad">${esc(text)}</span>` +
      (fields.length ? `<p>Страховщику нужно: ${esc(fields.join(', '))}. Заполните в форме («Новый расчёт»).</p>` : '');
  }
  return `<div class="row-main"><div class="ins"><span class="name">${esc(insurerName(d.insurer_id))}</span>` +
    `<span class="badge best-badge">Лучшая цена</span><div class="status">${status}</div></div>` +
    `<div class="price">${price}</div><div class="act">${act}</div></div>${more}`;
}

/** What the buyer pays: the premium and every mandatory add-on. */
function total(q) {
  const addOns = Array.isArray(q.add_ons) ? q.add_ons : [];
  return Number(q.premium_kopecks) + addOns.filter(a => a.mandatory)
    .reduce((s, a) => s + Math.trunc(Number(a.price_kopecks) || 0), 0);
}
/** May this offer be called the best price? Not with a forced add-on (OSAGO
 *  may not be sold with one), nor at a price outside the lawful range. */
function eligible(d) {
  if (group(d) !== 0) return false;
  const q = d.quote;
  const forced = (Array.isArray(q.add_ons) ? q.add_ons : []).some(a => a.mandatory);
  const verdict = q.price_check && q.price_check.verdict;
  return !forced && (!verdict || verdict === 'within');
}

// Sort groups: 0 = quoted (by the total to pay), 1 = pending, 2 = declined/failed/no answer.
function group(d) {
  if (d.status === 'quoted' && d.quote) return 0;
  if (d.status === 'pending' && !state.timedOut) return 1;
  return 2;
}

/** Re-sort rows in place, moving only the elements that are out of order (no rebuild, no flicker). */
function arrange() {
  const list = Array.from(state.insurers.values()).sort((a, b) =>
    group(a) - group(b) ||
    (group(a) === 0 ? total(a.quote) - total(b.quote) : 0) ||
    insurerName(a.insurer_id).localeCompare(insurerName(b.insurer_id), 'ru'));
  const fair = list.filter(eligible).map(d => total(d.quote));
  const best = fair.length ? Math.min(...fair) : null;
  list.forEach((d, i) => {
    const li = state.rows.get(d.insurer_id);
    li.classList.toggle('best', best !== null && eligible(d) && total(d.quote) === best);
    if (resultsEl.children[i] !== li) resultsEl.insertBefore(li, resultsEl.children[i] || null);
  });
  resEmpty.hidden = list.length > 0;
  updateProgress();
}
function counts() {
  const c = { quoted: 0, declined: 0, failed: 0, pending: 0 };
  for (const d of state.insurers.values()) c[d.status in c ? d.status : 'failed']++;
  return c;
}
function updateProgress() {
  const c = counts();
  const total = Math.max(state.total, state.insurers.size);
  // The one live region: a short count, announced when it changes (the
  // rows themselves are not, so a screen reader is not read the list again).
  const text = total ? `Ответили ${total - c.pending} из ${total}` : '';
  if (progressEl.textContent !== text) progressEl.textContent = text;
}

/* ---------------------------------------------------------------- countdown */
function startCountdown() {
  clearInterval(state.timer);
  tick();
  state.timer = setInterval(tick, 1000);
}
function tick() {
  if (!Number.isFinite(state.deadline)) { countdownEl.textContent = ''; return; }
  const ms = state.deadline - Date.now();
  if (ms <= 0) { countdownEl.textContent = 'приём предложений завершён'; clearInterval(state.timer); return; }
  const s = Math.ceil(ms / 1000);
  const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, sec = String(s % 60).padStart(2, '0');
  countdownEl.textContent = 'до окончания приёма предложений: ' +
    (h ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`);
}

/* ---------------------------------------------------------------- connection indicator */
let beatTimer = null;
function setConn(kind, at) {
  const texts = { connecting: 'подключаемся…', open: 'соединение установлено', alive: 'соединение активно',
    reconnecting: 'связь прервалась, переподключаемся…', lost: 'соединение потеряно, пробуем снова…' };
  connEl.hidden = !kind;
  if (!kind) return;
  connEl.className = 'conn ' + (kind === 'reconnecting' || kind === 'lost' ? 'warn' : kind);
  $('.conn-text', connEl).textContent = texts[kind];
  connEl.title = at ? `Последний сигнал: ${formatWhen(at)}` : '';
  if (kind === 'alive') { // restart the pulse animation
    clearTimeout(beatTimer);
    connEl.classList.remove('beat');
    void connEl.offsetWidth;
    connEl.classList.add('beat');
    beatTimer = setTimeout(() => connEl.classList.remove('beat'), 1000);
  }
}

/* ---------------------------------------------------------------- SSE stream */
function closeStream() {
  if (state.es) { state.es.close(); state.es = null; }
}
/** Open the SSE stream; EventSource itself reconnects (with Last-Event-ID) on network errors. */
function openStream(url) {
  closeStream();
  const es = new EventSource(url);
  state.es = es;
  setConn('connecting');
  const mine = () => state.es === es; // ignore events from a stream we already replaced
  es.onopen = () => { if (mine()) { state.retries = 0; setConn('open'); } };
  es.addEventListener('insurer', e => { if (mine()) applyInsurer(parseData(e)); });
  es.addEventListener('heartbeat', e => { if (mine()) { const d = parseData(e); setConn('alive', d && d.at); } });
  es.addEventListener('done', e => { if (mine()) finish('done', parseData(e)); });
  es.addEventListener('timeout', e => { if (mine()) finish('timeout', parseData(e)); });
  es.onerror = () => {
    if (!mine()) return;
    if (es.readyState === EventSource.CLOSED) streamClosed(url); // browser gave up (e.g. HTTP error)
    else setConn('reconnecting');                                  // browser reconnects by itself
  };
}

/** The browser stopped reconnecting: resync from the snapshot, then reopen (a few times, with backoff). */
function streamClosed(url) {
  closeStream();
  if (state.finished) return;
  setConn('lost');
  if (state.retries >= 5) {
    setConn(null);
    showSummary('Соединение с сервером потеряно', 'Обновите страницу, чтобы увидеть актуальные предложения.');
    return;
  }
  const delay = 2000 * 2 ** state.retries++;
  const id = state.requestId;
  state.resync = setTimeout(async () => {
    if (state.requestId !== id) return;
    const snap = await loadSnapshot(id);
    if (state.requestId !== id || !snap) return;
    if (snap.complete) finishFromSnapshot(); else openStream(url);
  }, delay);
}
/** Final state: kind is 'done' or 'timeout'; c = {quoted, declined, failed} from the event (or null). */
function finish(kind, c) {
  closeStream();
  clearInterval(state.timer);
  state.finished = true;
  setConn(null);
  const own = counts();
  if (kind === 'timeout') {
    state.timedOut = true;
    for (const [id, d] of state.insurers) if (d.status === 'pending') renderRow(id);
    countdownEl.textContent = 'приём предложений завершён';
  } else {
    countdownEl.textContent = '';
  }
  arrange();
  const q = c && Number.isFinite(c.quoted) ? c.quoted : own.quoted;
  const dcl = c && Number.isFinite(c.declined) ? c.declined : own.declined;
  const f = c && Number.isFinite(c.failed) ? c.failed : own.failed;
  const parts = [plural(q, 'предложение', 'предложения', 'предложений'), plural(dcl, 'отказ', 'отказа', 'отказов'),
    plural(f, 'ошибка', 'ошибки', 'ошибок')];
  let text = kind === 'timeout'
    ? `Время приёма предложений истекло. Получено: ${parts.join(', ')}` +
      (own.pending ? `; без ответа: ${own.pending}.` : '.')
    : `Расчёт завершён: ${parts.join(', ')}.`;
  if (q === 0) text += ' К сожалению, ни одна страховая не сделала предложение.';
  resSummary.textContent = text;
  resSummary.hidden = false;
}

/* ---------------------------------------------------------------- restore after refresh */
/** GET …/quotes and apply it. Returns the snapshot, or null (404 handled by caller via state). */
async function loadSnapshot(id) {
  let res;
  try { res = await fetch(quotesUrl(id), { headers: { Accept: 'application/json' } }); }
  catch { showSummary('Нет связи с сервером', 'Не удалось загрузить результаты расчёта.'); return null; }
  if (res.status === 404) { newCalc(); return null; }
  const snap = await readJson(res);
  if (!res.ok || !snap) { showProblem(res, snap); return null; }
  if (state.requestId !== id) return null;
  const t = Date.parse(snap.deadline_at);
  if (Number.isFinite(t)) state.deadline = t;
  const list = Array.isArray(snap.insurers) ? snap.insurers : [];
  state.total = Math.max(state.total, list.length);
  list.forEach(applyInsurer);
  return snap;
}
function finishFromSnapshot() {
  const c = counts();
  finish(c.pending ? 'timeout' : 'done', null);
}
/** Page loaded with #r=<id>: render the snapshot, then stream the rest if not complete. */
async function restore(id) {
  resetResults();
  state.requestId = id;
  showResults();
  try { showLawfulRange(JSON.parse(sessionStorage.getItem('range:' + id))); } catch { /* none kept */ }
  resEmpty.textContent = 'Загружаем результаты…';
  const snap = await loadSnapshot(id);
  if (state.requestId !== id) return;
  if (!snap) { resEmpty.textContent = 'Не удалось загрузить результаты. Обновите страницу или начните новый расчёт.'; return; }
  resEmpty.textContent = 'Ждём первые ответы…';
  if (snap.complete) finishFromSnapshot();
  else { startCountdown(); openStream(streamUrl(id)); }
}

// Back/forward or manual hash edits.
window.addEventListener('hashchange', () => {
  const id = hashId();
  if (id === state.requestId) return;
  if (id) restore(id); else if (state.requestId) newCalc();
});

/* ---------------------------------------------------------------- init */
fillForm(EMPTY);
const initial = hashId();
if (initial) restore(initial);
})();
