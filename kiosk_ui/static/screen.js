// Shared by the POS screens: long-poll the agent's control API and call render(state).
async function api(method, path, body) {
  const r = await fetch(path, {
    method, headers: body ? {"Content-Type": "application/json"} : {},
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
