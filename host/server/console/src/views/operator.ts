//! `#/operator/...`: the operator's views, after the token is entered. The
//! token is checked against the host before it is kept (sessionStorage only);
//! a refused token shows the host's own error. Endpoints a host does not have
//! yet (status, user list) say "not available" instead of showing anything
//! made up.

import {
  ApiError, admin, request, token, whenOperatorRefused,
  type Account, type Cluster, type LedgerAsset, type ModuleInfo, type Modules, type Status, type User,
} from "../api";
import { isZero } from "../decimal";
import { bytes, h, mount, shortHash } from "../dom";
import type { View } from "../shell";
import { errorBox, every, failure, num, panel } from "./common";

const TABS = [
  ["overview", "Overview"],
  ["ledger", "Ledger"],
  ["users", "Users & accounts"],
  ["modules", "Modules"],
] as const;

const REFRESH_MS = 4_000;
const ACCOUNTS_FETCHED_MAX = 200;

/** The message to show on the sign-in form after the host refused the stored token. */
let refusal: ApiError | null = null;

whenOperatorRefused((error) => {
  if (token.get() === null) return;
  token.clear();
  refusal = error;
  if (location.hash.startsWith("#/operator")) window.dispatchEvent(new HashChangeEvent("hashchange"));
});

export function operatorView(tab: string): View {
  if (token.get() === null) return loginView();
  const known = TABS.some(([id]) => id === tab) ? tab : "overview";
  const content = h("div", { class: "operator-content" });
  const logout = () => {
    token.clear();
    location.hash = "#/operator";
    window.dispatchEvent(new HashChangeEvent("hashchange"));
  };
  const element = h("div", { class: "page" },
    h("div", { class: "page-head row" },
      h("h1", {}, "Operator"),
      h("nav", { class: "tabs", "data-testid": "operator-tabs" },
        TABS.map(([id, label]) => h("a", { href: `#/operator/${id}`, class: `tab ${id === known ? "active" : ""}`, "data-testid": `tab-${id}` }, label))),
      h("button", { class: "btn btn-ghost", "data-testid": "logout", onclick: logout }, "Sign out")),
    content);
  const destroy = { overview, ledger, users, modules }[known as "overview"](content);
  return { element, destroy };
}

function loginView(): View {
  const input = h("input", { type: "password", class: "input", placeholder: "operator token", autocomplete: "off",
    spellcheck: "false", "data-testid": "token-input", "aria-label": "Operator token" });
  const message = h("div", { class: "login-message" }, refusal ? errorBox(refusal, "login-error") : null);
  refusal = null;
  const button = h("button", { type: "submit", class: "btn btn-primary", "data-testid": "token-submit" }, "Sign in");
  const submit = async (event: Event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (value === "") return;
    button.disabled = true;
    mount(message, h("div", { class: "muted" }, "Checking the token…"));
    try {
      await request("GET", "/admin/v1/ledger", { tokenOverride: value });
      token.set(value);
      window.dispatchEvent(new HashChangeEvent("hashchange"));
    } catch (error) {
      mount(message, errorBox(error, "login-error"));
      button.disabled = false;
      input.select();
    }
  };
  const element = h("div", { class: "page login-page" },
    h("form", { class: "login-card", onsubmit: submit, "data-testid": "login" },
      h("h1", {}, "Operator sign-in"),
      h("p", { class: "sub" }, "The operator token is printed by ", h("code", {}, "exhost serve"), " on first start and kept in ",
        h("code", {}, "<data-dir>/admin.token"), ". It stays in this tab only (session storage)."),
      h("label", { class: "field" }, h("span", {}, "Token"), input),
      button,
      message));
  queueMicrotask(() => input.focus());
  return { element, destroy() {} };
}

function kv(rows: [string, Node | string | number | null][], testid?: string): HTMLElement {
  return h("dl", { class: "kv", "data-testid": testid }, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v === null ? "—" : typeof v === "object" ? v : num(v))]));
}

// Overview: health, journal, snapshots, module faults, cluster.

function overview(content: HTMLElement): () => void {
  const statusBox = h("div", {}, h("div", { class: "loading" }, "Loading…"));
  const clusterBox = h("div", {}, h("div", { class: "loading" }, "Loading…"));
  const faultsBox = h("div", {});
  const snapshotResult = h("div", { class: "action-result", "data-testid": "snapshot-result" });
  const snapshotButton = h("button", { class: "btn btn-primary", "data-testid": "take-snapshot" }, "Take snapshot");
  const load = async () => {
    const [status, cluster] = await Promise.allSettled([admin<Status>("GET", "/admin/v1/status"), admin<Cluster>("GET", "/admin/v1/cluster")]);
    if (status.status === "fulfilled") {
      const st = status.value;
      const healthy = st.health === "ok";
      mount(statusBox, h("div", { class: `health ${healthy ? "health-ok" : "health-bad"}`, "data-testid": "health", "data-ok": healthy },
        h("span", { class: "dot" }), healthy ? "Healthy" : st.health),
        kv([
          ["Applied seq", st.seq],
          ["Journal last seq", st.journal.last_seq],
          ["Journal size", h("span", { class: "num", title: `${st.journal.size_bytes} bytes` }, bytes(st.journal.size_bytes))],
          ["Last snapshot seq", st.snapshot?.seq ?? h("span", { class: "muted" }, "none yet")],
          ["Snapshot digest", st.snapshot ? h("code", { class: "digest" }, st.snapshot.digest) : h("span", { class: "muted" }, "—")],
          ...(st.snapshot?.size_bytes === undefined ? [] : [["Snapshot size", h("span", { class: "num" }, bytes(st.snapshot.size_bytes))] as [string, Node]]),
          ["Snapshots kept", st.snapshots],
        ], "status"));
      const faults = st.module_faults;
      mount(faultsBox, faults.total === 0 ? h("div", { class: "ok-box", "data-testid": "faults" }, "No module faults.")
        : h("div", { "data-testid": "faults" },
          h("div", { class: "alert alert-warn" }, `${faults.total} module fault${faults.total === 1 ? "" : "s"} in total`),
          h("table", { class: "grid-table" },
            h("thead", {}, h("tr", {}, h("th", { class: "r" }, "Seq"), h("th", {}, "Module"), h("th", {}, "Fault"))),
            h("tbody", {}, faults.recent.map((f) => h("tr", {}, h("td", { class: "r" }, num(f.seq)), h("td", {}, shortHash(f.module)), h("td", { class: "fault" }, f.fault)))))));
    } else {
      mount(statusBox, failure(status.reason, "Journal and snapshot status"));
      mount(faultsBox, failure(status.reason, "Module faults"));
    }
    if (cluster.status === "fulfilled") {
      const c = cluster.value;
      const lag = c.log_seq - c.applied_seq;
      mount(clusterBox, kv([
        ["This node", c.node ?? h("span", { class: "muted" }, "single node")],
        ["Role", h("span", { class: `badge ${c.role === "active" ? "badge-ok" : "badge-info"}`, "data-testid": "cluster-role" }, c.role)],
        ["Active node", c.active_node ?? h("span", { class: "muted" }, c.node === null ? "this one (no cluster)" : "unknown")],
        ["Applied seq", c.applied_seq],
        ["Log seq", c.log_seq],
        ["Behind the log", h("span", { class: `num ${lag === 0 ? "ok" : "warn"}` }, `${lag}`)],
        ...(c.term === undefined ? [] : [["Term", c.term] as [string, number]]),
      ], "cluster"));
    } else {
      mount(clusterBox, failure(cluster.reason, "Cluster"));
    }
  };
  snapshotButton.addEventListener("click", async () => {
    snapshotButton.disabled = true;
    mount(snapshotResult, h("span", { class: "muted" }, "Taking a snapshot…"));
    try {
      const answer = await admin<{ seq: number }>("POST", "/admin/v1/snapshots");
      mount(snapshotResult, h("span", { class: "ok" }, "Snapshot taken at seq ", num(answer.seq)));
      await load();
    } catch (error) {
      mount(snapshotResult, errorBox(error));
    } finally {
      snapshotButton.disabled = false;
    }
  });
  mount(content, h("div", { class: "cards" },
    panel("Journal & snapshots", [statusBox, h("div", { class: "actions" }, snapshotButton, snapshotResult)], { "data-testid": "status-panel" }),
    panel("Cluster", clusterBox, { "data-testid": "cluster-panel" }),
    panel("Module faults", faultsBox, { class: "panel wide" })));
  return every(REFRESH_MS, load);
}

// Ledger: the books per asset; the imbalance must be zero.

function ledger(content: HTMLElement): () => void {
  const summary = h("div", {});
  const fund = h("div", { class: "fund-cards" });
  const body = h("div", {}, h("div", { class: "loading" }, "Loading…"));
  mount(content, summary,
    panel("Insurance fund", fund, { "data-testid": "insurance-fund" }),
    panel("Ledger per asset", body, { "data-testid": "ledger" }));
  return every(REFRESH_MS, async () => {
    let answer: Record<string, unknown>;
    try {
      answer = await admin<Record<string, unknown>>("GET", "/admin/v1/ledger");
    } catch (error) {
      mount(summary, failure(error, "Ledger"));
      return;
    }
    const seq = typeof answer.seq === "number" ? answer.seq : null;
    const assets = Object.entries(answer).filter((e): e is [string, LedgerAsset] => typeof e[1] === "object" && e[1] !== null).sort(([a], [b]) => a.localeCompare(b));
    const off = assets.filter(([, l]) => l.imbalance !== undefined && !isZero(l.imbalance));
    const unreported = assets.filter(([, l]) => l.imbalance === undefined);
    mount(summary, h("div", { class: `banner ${off.length ? "banner-bad" : "banner-ok"}`, "data-testid": "ledger-summary", "data-balanced": off.length === 0 && unreported.length === 0 },
      h("span", { class: "banner-title" }, off.length ? `Imbalance in ${off.map(([a]) => a).join(", ")}` : assets.length ? "The books balance" : "No assets yet"),
      h("span", { class: "banner-detail" }, seq === null ? "" : `at seq ${seq}`,
        unreported.length ? ` · imbalance not reported for ${unreported.map(([a]) => a).join(", ")}` : "")));
    mount(fund, assets.length === 0 ? h("div", { class: "muted-box" }, "No assets yet.") :
      assets.map(([asset, l]) => h("div", { class: "fund", "data-testid": "fund", "data-asset": asset },
        h("span", { class: "fund-asset" }, asset), h("span", { class: "num fund-amount" }, l.insurance_fund))));
    const columns: [keyof LedgerAsset, string][] = [
      ["deposits", "Deposits"], ["withdrawals", "Withdrawals"], ["fees", "Fees"], ["insurance_fund", "Insurance fund"],
      ["user_balances", "User balances"], ["unrealized_pnl", "Unrealized PnL"],
    ];
    mount(body, h("table", { class: "grid-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Asset"), columns.map(([, label]) => h("th", { class: "r" }, label)), h("th", { class: "r" }, "Imbalance"))),
      h("tbody", {}, assets.map(([asset, l]) => {
        const zero = l.imbalance !== undefined && isZero(l.imbalance);
        return h("tr", { "data-testid": "ledger-row", "data-asset": asset },
          h("td", { class: "symbol" }, asset),
          columns.map(([key]) => h("td", { class: "r" }, num(l[key] ?? null))),
          h("td", { class: "r" }, h("span", { class: `pill ${zero ? "pill-ok" : "pill-bad"}`, "data-testid": "imbalance", "data-asset": asset, "data-zero": zero },
            l.imbalance ?? "not reported")));
      }))));
  });
}

// Users and their accounts.

function users(content: HTMLElement): () => void {
  const list = h("div", {}, h("div", { class: "loading" }, "Loading…"));
  const detail = h("div", { "data-testid": "account-detail" }, h("div", { class: "muted-box" }, "Select a user to see the account."));
  const lookup = h("input", { class: "input input-small", type: "text", inputmode: "numeric", pattern: "[0-9]+", placeholder: "user id", "data-testid": "user-lookup", "aria-label": "User id" });
  let selected: number | null = null;
  const show = async (userId: number) => {
    selected = userId;
    try {
      renderAccount(detail, await admin<Account>("GET", `/admin/v1/accounts/${userId}`));
    } catch (error) {
      mount(detail, errorBox(error));
    }
  };
  const form = h("form", { class: "inline-form", onsubmit: (e: Event) => { e.preventDefault(); if (/^\d+$/.test(lookup.value.trim())) void show(Number(lookup.value.trim())); } },
    lookup, h("button", { class: "btn", type: "submit" }, "Open account"));
  mount(content, h("div", { class: "split" },
    panel("Users", list, { "data-testid": "users" }, form),
    panel("Account", detail)));
  return every(REFRESH_MS, async () => {
    let all: User[];
    try {
      all = await admin<User[]>("GET", "/admin/v1/users");
    } catch (error) {
      mount(list, error instanceof ApiError && error.endpointMissing
        ? h("div", { class: "muted-box", "data-testid": "not-available" }, "The user list is not available on this host; open an account by its user id above.")
        : errorBox(error));
      if (selected !== null) await show(selected);
      return;
    }
    const accounts = await Promise.all(all.slice(0, ACCOUNTS_FETCHED_MAX).map((u) =>
      admin<Account>("GET", `/admin/v1/accounts/${u.user_id}`).catch(() => null)));
    mount(list, all.length === 0 ? h("div", { class: "muted-box" }, "No users yet.") : h("table", { class: "grid-table" },
      h("thead", {}, h("tr", {}, h("th", { class: "r" }, "User"), h("th", {}, "Key"), h("th", { class: "r" }, "Equity"), h("th", {}, "Balances (total)"), h("th", { class: "r" }, "Positions"))),
      h("tbody", {}, all.map((u, i) => {
        const account = accounts[i] ?? null;
        return h("tr", { class: `clickable ${u.user_id === selected ? "selected" : ""}`, "data-testid": "user-row", "data-user-id": u.user_id, onclick: () => void show(u.user_id) },
          h("td", { class: "r" }, num(u.user_id)),
          h("td", {}, keyOf(u)),
          h("td", { class: "r" }, num(account?.equity ?? null)),
          h("td", {}, account ? Object.entries(account.balances).map(([asset, b]) => h("span", { class: "chip" }, num(b.total), ` ${asset}`)) : h("span", { class: "muted" }, "—")),
          h("td", { class: "r" }, num(account ? account.positions.length : null)));
      }))));
    if (selected !== null) await show(selected);
  });
}

function keyOf(user: User): HTMLElement {
  const scheme = user.signs_with ?? (user.public_key ? "ed25519" : user.api_key ? "hmac" : "unusable");
  const label = { hmac: "HMAC", ed25519: "Ed25519", unusable: "unusable" }[scheme] ?? scheme;
  return h("span", { class: "key" },
    h("span", { class: `badge ${scheme === "unusable" ? "badge-warn" : "badge-info"}` }, label),
    user.api_key ? h("code", {}, user.api_key) : null,
    user.public_key ? shortHash(user.public_key) : null);
}

function renderAccount(detail: HTMLElement, account: Account): void {
  mount(detail,
    kv([["User", account.user_id], ["Seq", account.seq], ["Equity", account.equity], ["Margin ratio", account.margin_ratio]]),
    h("h3", {}, "Balances"),
    h("table", { class: "grid-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Asset"), h("th", { class: "r" }, "Total"), h("th", { class: "r" }, "Available"), h("th", { class: "r" }, "Reserved"))),
      h("tbody", {}, Object.entries(account.balances).map(([asset, b]) =>
        h("tr", {}, h("td", { class: "symbol" }, asset), h("td", { class: "r" }, num(b.total)), h("td", { class: "r" }, num(b.available)), h("td", { class: "r" }, num(b.reserved)))))),
    h("h3", {}, "Positions"),
    account.positions.length === 0 ? h("div", { class: "muted-box" }, "No open positions.") :
      h("div", { class: "table-scroll" }, h("table", { class: "grid-table" },
        h("thead", {}, h("tr", {}, ["Market", "Size", "Entry", "Mark", "Unrealized PnL", "Realized PnL", "Liquidation"].map((c, i) => h("th", { class: i ? "r" : "" }, c)))),
        h("tbody", {}, account.positions.map((p) => h("tr", {},
          h("td", { class: "symbol" }, p.symbol),
          h("td", { class: `r ${p.size.startsWith("-") ? "down" : "up"}` }, num(p.size)),
          h("td", { class: "r" }, num(p.entry_price)), h("td", { class: "r" }, num(p.mark_price)),
          h("td", { class: `r ${p.unrealized_pnl.startsWith("-") ? "down" : ""}` }, num(p.unrealized_pnl)),
          h("td", { class: "r" }, num(p.realized_pnl)), h("td", { class: "r" }, num(p.liquidation_price))))))));
}

// Modules: stored modules, activation history, upload.

function modules(content: HTMLElement): () => void {
  const stored = h("div", {}, h("div", { class: "loading" }, "Loading…"));
  const history = h("div", {});
  const file = h("input", { type: "file", accept: ".wasm,application/wasm", class: "file-input", "data-testid": "module-file", id: "module-file" });
  const result = h("div", { class: "upload-result", "data-testid": "upload-result" });
  const upload = h("button", { class: "btn btn-primary", "data-testid": "module-upload", disabled: true }, "Validate & store");
  const load = async () => {
    try {
      renderModules(stored, history, await admin<Modules>("GET", "/admin/v1/modules"));
    } catch (error) {
      mount(stored, failure(error, "Modules"));
    }
  };
  file.addEventListener("change", () => {
    upload.disabled = !file.files?.length;
    mount(result);
  });
  upload.addEventListener("click", async () => {
    const chosen = file.files?.[0];
    if (!chosen) return;
    upload.disabled = true;
    mount(result, h("span", { class: "muted" }, `Uploading ${chosen.name} (${bytes(chosen.size)})…`));
    try {
      const answer = await request<ModuleInfo>("POST", "/admin/v1/modules", { operator: true, body: await chosen.arrayBuffer() });
      mount(result, h("div", { class: "alert alert-ok", "data-testid": "upload-ok" },
        h("span", { class: "alert-code" }, "accepted"),
        kv([
          ["Hash", h("code", { class: "digest", "data-testid": "upload-hash" }, answer.hash)],
          ["Kind", answer.kind],
          ["ABI version", answer.abi_version],
          ["Size", h("span", { class: "num" }, `${answer.size} bytes`)],
          ...(answer.state_version === undefined ? [] : [["State version", answer.state_version] as [string, number]]),
        ]),
        answer.dry_run?.length ? h("div", {},
          h("h3", {}, "Dry run against the live state"),
          h("table", { class: "grid-table" },
            h("thead", {}, h("tr", {}, h("th", {}, "Target"), h("th", {}, "Result"), h("th", { class: "r" }, "State version"), h("th", {}, "Detail"))),
            h("tbody", {}, answer.dry_run.map((d) => h("tr", {},
              h("td", { class: "symbol" }, d.target),
              h("td", {}, h("span", { class: `badge ${d.ok ? "badge-ok" : "badge-warn"}` }, d.ok ? "would take over" : "refused")),
              h("td", { class: "r" }, num(d.to_state_version === undefined ? null : `${d.from_state_version} → ${d.to_state_version}`)),
              h("td", { class: d.ok ? "muted" : "fault" }, d.error ?? (d.rollback_checked ? "rollback checked" : ""))))))) : null));
      await load();
    } catch (error) {
      mount(result, errorBox(error, "upload-error"));
    } finally {
      upload.disabled = false;
    }
  });
  mount(content,
    panel("Upload a module", h("div", { class: "upload" },
      h("label", { class: "file-label", for: "module-file" }, file, h("span", {}, "Choose a .wasm file")),
      upload,
      h("p", { class: "sub" }, "The host validates the module (imports, exports, ABI version) and stores it; activating it is a separate step."),
      result)),
    panel("Stored modules", stored, { "data-testid": "modules" }),
    panel("Activation history", history, { "data-testid": "activations" }));
  file.addEventListener("change", () => {
    const label = file.parentElement?.querySelector("span");
    if (label) label.textContent = file.files?.[0]?.name ?? "Choose a .wasm file";
  });
  return every(REFRESH_MS * 2, load);
}

function renderModules(stored: HTMLElement, history: HTMLElement, answer: Modules): void {
  mount(stored, answer.modules.length === 0 ? h("div", { class: "muted-box" }, "No modules stored.") : h("table", { class: "grid-table" },
    h("thead", {}, h("tr", {}, h("th", {}, "Hash"), h("th", {}, "Kind"), h("th", { class: "r" }, "ABI"), h("th", { class: "r" }, "State ver."), h("th", { class: "r" }, "Size"), h("th", {}, "Active for"))),
    h("tbody", {}, answer.modules.map((m) => h("tr", { "data-testid": "module-row", "data-hash": m.hash, "data-kind": m.kind },
      h("td", {}, h("code", { class: "digest", title: m.hash }, m.hash)),
      h("td", {}, h("span", { class: `badge ${m.kind === "matching" ? "badge-info" : "badge-violet"}` }, m.kind)),
      h("td", { class: "r" }, num(m.abi_version)),
      h("td", { class: "r" }, num(m.state_version ?? null)),
      h("td", { class: "r" }, h("span", { class: "num", title: `${m.size} bytes` }, bytes(m.size))),
      h("td", {}, m.active_for?.length ? m.active_for.map((t) => h("span", { class: "chip chip-ok" }, t)) : h("span", { class: "muted" }, "inactive")))))));
  mount(history, answer.activations.length === 0 ? h("div", { class: "muted-box" }, "No activations since the markets were created (no hot swap yet).") : h("table", { class: "grid-table" },
    h("thead", {}, h("tr", {}, h("th", { class: "r" }, "Seq"), h("th", {}, "Target"), h("th", {}, "From"), h("th", {}, ""), h("th", {}, "To"))),
    h("tbody", {}, [...answer.activations].sort((a, b) => b.seq - a.seq).map((a) => h("tr", { "data-testid": "activation-row" },
      h("td", { class: "r" }, num(a.seq)), h("td", { class: "symbol" }, a.target),
      h("td", {}, a.from ? shortHash(String(a.from)) : h("span", { class: "muted" }, "—")), h("td", { class: "muted" }, "→"),
      h("td", {}, a.to ? shortHash(String(a.to)) : h("span", { class: "muted" }, "—")))))));
}
