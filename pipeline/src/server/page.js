// The live inventory page. It shows what GET /v1/inventory shows and follows the SSE
// stream (/v1/stream) for every committed change. Both carry absolute numbers with the
// version (epoch) of each SKU's last change, so merging them needs no ordering: for
// each SKU the highest version wins. That is why the stream is opened *before* the
// snapshot is read: a change that lands in between is seen twice, never missed.
'use strict';

const MAX_ORDERS = 50;
const stock = new Map();  // sku -> {on_hand, reserved, available, version}; zeros kept, not shown
const orders = [];        // newest first: {order_id, status, total_minor, currency, epoch}
let asOf = null;          // the committed epoch the page reflects
let changed = new Set();  // SKUs to flash on the next render
let renderPending = false;

const $ = (id) => document.getElementById(id);

function setConnection(text) {
  const el = $('connection');
  el.textContent = text;
  el.className = text;
}

function advance(epoch) {
  if (typeof epoch === 'number' && (asOf === null || epoch > asOf)) asOf = epoch;
}

// One SKU's numbers at a version; older versions than what the page has are ignored.
function applyLevel(level) {
  const current = stock.get(level.sku);
  if (current && current.version > level.version) return;
  stock.set(level.sku, {
    on_hand: level.on_hand, reserved: level.reserved,
    available: level.available, version: level.version,
  });
  changed.add(level.sku);
}

// The REST snapshot: every SKU with non-zero numbers as of `as_of_epoch`. A SKU the page
// holds at an older version but the snapshot lacks is zero as of that epoch.
function applySnapshot(body) {
  const present = new Set(body.items.map((item) => item.sku));
  for (const [sku, level] of stock) {
    if (!present.has(sku) && level.version <= body.as_of_epoch) {
      applyLevel({ sku, on_hand: 0, reserved: 0, available: 0, version: level.version });
    }
  }
  body.items.forEach(applyLevel);
  advance(body.as_of_epoch);
  changed = new Set(); // flash what the stream changes, not what the snapshot loaded
  render();
}

async function loadSnapshot() {
  for (;;) {
    try {
      const response = await fetch('/v1/inventory', { cache: 'no-store' });
      if (response.ok) {
        applySnapshot(await response.json());
        return;
      }
      setConnection(response.status === 503 ? 'rebuilding' : 'down');
    } catch (e) {
      setConnection('down');
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = String(text);
  if (className) td.className = className;
}

function render() {
  const body = $('inventory').tBodies[0];
  const rows = [...stock.entries()]
    .filter(([, l]) => l.on_hand !== 0 || l.reserved !== 0)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  body.replaceChildren();
  for (const [sku, l] of rows) {
    const row = body.insertRow();
    row.dataset.sku = sku;
    if (changed.has(sku)) row.className = 'changed';
    cell(row, sku);
    cell(row, l.on_hand);
    cell(row, l.reserved);
    cell(row, l.available, l.available < 0 ? 'oversold' : '');
    cell(row, l.version);
  }
  changed = new Set();
  $('sku-count').textContent = `(${rows.length})`;

  const orderBody = $('orders').tBodies[0];
  orderBody.replaceChildren();
  for (const o of orders) {
    const row = orderBody.insertRow();
    row.dataset.order = o.order_id;
    cell(row, o.order_id);
    cell(row, o.status);
    cell(row, o.total_minor === undefined ? '' : `${o.total_minor} ${o.currency} (minor)`);
    cell(row, o.epoch);
  }

  $('epoch').textContent = asOf === null ? '–' : String(asOf);
  $('epoch-time').textContent = asOf === null ? '' : `(${new Date(asOf).toISOString()})`;
  $('epoch-time').dateTime = asOf === null ? '' : new Date(asOf).toISOString();
}

// At most one render per 100 ms, however fast changes arrive.
function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  setTimeout(() => { renderPending = false; render(); }, 100);
}

function onOrder(data) {
  const i = orders.findIndex((o) => o.order_id === data.order_id);
  if (i >= 0) orders.splice(i, 1);
  orders.unshift({
    order_id: data.order_id,
    status: data.removed ? 'REMOVED' : data.status,
    total_minor: data.total_minor,
    currency: data.currency,
    epoch: data.epoch,
  });
  orders.length = Math.min(orders.length, MAX_ORDERS);
}

function connect() {
  const source = new EventSource('/v1/stream');
  // (Re)connected: changes made while disconnected were missed, so read the snapshot.
  source.addEventListener('open', () => {
    setConnection('live');
    loadSnapshot();
  });
  source.addEventListener('error', () => setConnection('connecting'));
  source.addEventListener('stock', (e) => {
    const data = JSON.parse(e.data);
    applyLevel(data);
    advance(data.epoch);
    scheduleRender();
  });
  source.addEventListener('order', (e) => {
    const data = JSON.parse(e.data);
    onOrder(data);
    advance(data.epoch);
    scheduleRender();
  });
  // The server dropped changes for this page (it fell behind): start over.
  source.addEventListener('lagged', () => loadSnapshot());
}

connect();
