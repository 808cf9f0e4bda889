// The kiosk's touch screen: menus and forms here, every decision in the agent
// (edge/kiosk/engine.py) through its control API; the screen follows /control/state.
const $ = (id) => document.getElementById(id);
const TOKEN = () => (document.querySelector('meta[name="ykt-control-token"]') || {}).content || "";

async function api(method, path, body) {
  const headers = {"X-Ykt-Control-Token": TOKEN()};
  if (body) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {method, headers, body: body ? JSON.stringify(body) : undefined});
  const data = await r.json();
  if (!r.ok) throw new Error((data.error && data.error.message) || r.statusText);
  return data;
}

const yuan = (fen) => (fen === null || fen === undefined) ? "" : "¥" + (fen / 100).toFixed(2);
function toFen(text) {
  const m = /^\s*(\d{1,7})(?:\.(\d{1,2}))?\s*$/.exec(text || "");
  if (!m) return null;
  return parseInt(m[1], 10) * 100 + parseInt((m[2] || "").padEnd(2, "0") || "0", 10);
}

const PW = {type: "password", inputmode: "numeric", maxlength: 6, pattern: "[0-9]{6}"};
// Each form: its title, its fields, and the request it makes.
const FORMS = {
  "query-password": {
    title: "修改查询密码 · Change the query password (R4)",
    fields: [["old", "原查询密码 Current query password", PW], ["new", "新查询密码 New query password", PW]],
    send: (v) => api("POST", "/control/card/query-password", {old: v.old, new: v.new}),
  },
  "consume-password": {
    title: "修改消费密码 · Change the consumption password (R5)",
    fields: [["old", "原消费密码 Current consumption password", PW], ["new", "新消费密码 New consumption password", PW]],
    send: (v) => api("POST", "/control/card/consume-password", {old: v.old, new: v.new}),
  },
  "limit": {
    title: "修改每日限额 · Change the daily limit (R6)",
    fields: [["amount", "新限额（元） New limit (yuan)", {inputmode: "decimal"}], ["pin", "消费密码 Consumption password", PW]],
    send: (v) => {
      const fen = toFen(v.amount);
      if (!fen) throw new Error("金额无效 / not an amount");
      return api("POST", "/control/card/limit", {amount_fen: fen, pin: v.pin});
    },
  },
  "electricity": {
    title: "电费转账 · Pay for electricity (R15)",
    fields: [["building", "楼号 Building", {}], ["room", "房间 Room", {}],
             ["amount", "金额（元） Amount (yuan)", {inputmode: "decimal"}], ["password", "查询密码 Query password", PW]],
    send: (v) => {
      const fen = toFen(v.amount);
      if (!fen) throw new Error("金额无效 / not an amount");
      return api("POST", "/control/card/electricity", {building: v.building, room: v.room, amount_fen: fen, password: v.password});
    },
  },
  "report-loss": {
    title: "挂失 · Report the card lost (R10)",
    fields: [["number", "学工号（临时卡填卡号） Number (card number for temporary cards)", {}], ["password", "查询密码 Query password", PW]],
    send: (v) => api("POST", "/control/holder/report-loss", {number: v.number, password: v.password}),
  },
  "unlock": {
    title: "解挂 · Unlock the card (R10)",
    fields: [["number", "学工号（临时卡填卡号） Number (card number for temporary cards)", {}], ["password", "查询密码 Query password", PW]],
    send: (v) => api("POST", "/control/holder/unlock", {number: v.number, password: v.password}),
  },
  "found-cards": {
    title: "拾卡查询 · Has someone found my card? (R17)",
    fields: [["number", "学工号 Number", {}], ["password", "查询密码 Query password", PW]],
    send: (v) => api("POST", "/control/holder/found-cards", {number: v.number, password: v.password}),
  },
  "reissue": {
    title: "补办新卡 · Reissue a card (R11, student and staff cards)",
    fields: [["number", "学工号 Student/staff number", {}], ["id_card", "身份证号 ID-card number", {maxlength: 18}]],
    send: (v) => api("POST", "/control/reissue/quote", {number: v.number, id_card: (v.id_card || "").toUpperCase()}),
  },
};

let view = "menu";   // which form is open (the rest follows the agent's state)
let last = null;
let focused = null;

function openForm(name) {
  const f = FORMS[name];
  view = name;
  $("f-title").textContent = f.title;
  const box = $("f-fields");
  box.textContent = "";
  for (const [key, label, attrs] of f.fields) {
    const l = document.createElement("label");
    l.textContent = label; l.htmlFor = "in-" + key;
    const i = document.createElement("input");
    i.id = "in-" + key; i.name = key; i.dataset.testid = "in-" + key;
    for (const [a, val] of Object.entries(attrs)) i.setAttribute(a, val);
    i.onfocus = () => { focused = i; };
    box.append(l, i);
  }
  focused = box.querySelector("input");
  if (focused) focused.focus();
  show();
}

function closeForm() { view = "menu"; $("f-fields").textContent = ""; show(); }

async function submitForm(e) {
  e.preventDefault();
  const f = FORMS[view];
  const values = {};
  for (const i of $("f-fields").querySelectorAll("input")) values[i.name] = i.value.trim();
  $("f-submit").disabled = true;
  try {
    await f.send(values);
    closeForm();
  } catch (err) {
    $("message").textContent = err.message; $("message").className = "fail";
  } finally {
    $("f-submit").disabled = false;
  }
}

function keypad() {
  const pad = $("keypad");
  for (const k of ["1", "2", "3", "4", "5", "6", "7", "8", "9", "X", "0", "⌫"]) {
    const b = document.createElement("button");
    b.type = "button"; b.textContent = k;
    b.onclick = () => {
      if (!focused) return;
      focused.value = k === "⌫" ? focused.value.slice(0, -1) : focused.value + k;
      focused.focus();
    };
    pad.append(b);
  }
}

function show() {
  const s = last || {state: "idle"};
  const st = s.state;
  $("form").hidden = view === "menu";
  $("menu").hidden = view !== "menu" || ["quote", "issuing", "take_card"].includes(st);
  $("account").hidden = !(s.account && st === "card");
  $("quote").hidden = st !== "quote";
  $("order").hidden = !["issuing", "take_card", "fault"].includes(st) || !s.order;
}

function render(s) {
  const before = last ? last.state : "idle";
  last = s;
  document.body.dataset.state = s.state;
  $("state").dataset.state = s.state; $("state").textContent = s.state;
  if (s.state === "idle" && before !== "idle") {
    // the visit ended (timeout or home): forget everything keyed on this screen
    closeForm();
  }
  if (s.state === "quote" || s.state === "issuing") view = "menu";
  const n = $("notices");
  n.textContent = "";
  for (const x of s.notices || []) {
    const d = document.createElement("div"); d.textContent = x.text; d.dataset.code = x.code; n.append(d);
  }
  const a = s.account || {};
  $("a-name").textContent = a.name || ""; $("a-number").textContent = a.number || "";
  $("a-card").textContent = a.card_no || ""; $("a-balance").textContent = yuan(a.balance_fen);
  $("a-transition").textContent = yuan(a.transition_fen); $("a-limit").textContent = yuan(a.limit_fen);
  $("a-status").textContent = a.status || ""; $("a-expires").textContent = a.expires || "";
  const recent = $("a-recent");
  recent.textContent = "";
  for (const line of a.recent || []) {
    const tr = document.createElement("tr");
    for (const v of [line.time.slice(0, 16).replace("T", " "), line.memo || line.kind,
                     line.amount_fen === null ? "" : yuan(line.amount_fen)]) {
      const td = document.createElement("td"); td.textContent = v; tr.append(td);
    }
    recent.append(tr);
  }
  const q = s.quote || {};
  $("q-name").textContent = q.name || ""; $("q-number").textContent = q.number || "";
  $("q-fee").textContent = yuan(q.fee_fen); $("q-after").textContent = yuan(q.balance_after_fen);
  const o = s.order || {};
  $("o-title").textContent = s.state === "take_card" ? "请取走新卡 · Please take your new card"
    : s.state === "fault" ? "补卡未完成 · The reissue did not finish" : "正在制卡，请稍候 · Making your card…";
  $("o-id").textContent = o.order_id || ""; $("o-card").textContent = o.card_no || "";
  $("o-fee").textContent = yuan(o.fee_fen); $("o-balance").textContent = yuan(o.balance_fen);
  $("message").textContent = s.message || "";
  $("message").className = s.message ? (s.ok ? "good" : "fail") : "";
  show();
}

async function follow() {
  let version = -1;
  for (;;) {
    try {
      const s = await api("GET", `/control/state?after=${version}&wait=${version < 0 ? 0 : 25}`);
      version = s.version;
      render(s);
    } catch (e) {
      document.body.dataset.link = "lost";
      await new Promise((ok) => setTimeout(ok, 1000));
    }
  }
}

window.addEventListener("DOMContentLoaded", () => {
  keypad();
  for (const b of document.querySelectorAll("[data-go]")) {
    b.onclick = async () => {
      const go = b.dataset.go;
      if (go === "balance") {
        try { await api("POST", "/control/card/read"); } catch (err) { /* shown by the agent */ }
      } else if (go === "correct") {
        try { await api("POST", "/control/card/correct"); } catch (err) { /* shown */ }
      } else {
        openForm(go);
      }
    };
  }
  $("a-transition-in").onclick = async () => {
    try { await api("POST", "/control/card/transition"); } catch (err) { /* shown by the agent */ }
  };
  $("form").onsubmit = submitForm;
  $("f-cancel").onclick = closeForm;
  $("home").onclick = async () => { closeForm(); try { await api("POST", "/control/home"); } catch (e) { /* issuing */ } };
  $("q-confirm").onclick = async () => {
    $("q-confirm").disabled = true;
    try { await api("POST", "/control/reissue/confirm"); } catch (err) { /* shown by the agent */ }
    finally { $("q-confirm").disabled = false; }
  };
  $("q-cancel").onclick = () => api("POST", "/control/home");
  document.addEventListener("pointerdown", () => { api("POST", "/control/touch").catch(() => {}); });
  follow();
});
