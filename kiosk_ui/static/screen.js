// Shared by the POS screens: long-poll the agent's control API and call render(state).
// A request that changes state carries the agent's per-boot token, which the agent put into
// this page (a page of another origin cannot read it): edge/pos/controltoken.py.
function controlToken() {
  const meta = document.querySelector('meta[name="ykt-control-token"]');
  return meta ? meta.content : "";
}
async function api(method, path, body) {
  const headers = body ? {"Content-Type": "application/json"} : {};
  if (method !== "GET") headers["X-Ykt-Control-Token"] = controlToken();
  const r = await fetch(path, {
    method, headers,
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await r.json();
  if (!r.ok) throw new Error((data.error && data.error.message) || r.statusText);
  return data;
}
async function follow(render) {
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
async function followStatus(render) {
  for (;;) {
    try { render(await api("GET", "/control/status")); } catch (e) { /* agent restarting */ }
    await new Promise((ok) => setTimeout(ok, 2000));
  }
}
