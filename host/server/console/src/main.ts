//! The console's shell: the top bar, hash routes and the view lifecycle.
//! Routes: `#/` markets, `#/market/SYMBOL` one market live,
//! `#/operator[/overview|ledger|users|modules]` the operator's views.
//! A view owns its timers and sockets and releases them in `destroy`.

import "./style.css";
import { h, mount } from "./dom";
import { marketsView } from "./views/markets";
import { marketView } from "./views/market";
import { operatorView } from "./views/operator";
import { connection, setConnection, type View } from "./shell";

const navMarkets = h("a", { href: "#/", class: "nav-link", "data-testid": "nav-markets" }, "Markets");
const navOperator = h("a", { href: "#/operator", class: "nav-link", "data-testid": "nav-operator" }, "Operator");
const main = h("main", { class: "main" });

const app = document.getElementById("app")!;
mount(
  app,
  h("header", { class: "topbar" },
    h("a", { href: "#/", class: "brand" }, h("span", { class: "brand-mark" }, "ex"), "host", h("span", { class: "brand-sub" }, "console")),
    h("nav", { class: "nav" }, navMarkets, navOperator),
    h("div", { class: "topbar-right" }, connection),
  ),
  main,
);

let current: View | null = null;

function route(): void {
  current?.destroy();
  setConnection("idle");
  const path = (location.hash.replace(/^#/, "") || "/").split("/").filter(Boolean).map(decodeURIComponent);
  navMarkets.classList.toggle("active", path[0] !== "operator");
  navOperator.classList.toggle("active", path[0] === "operator");
  if (path[0] === "market" && path[1]) {
    current = marketView(path[1]);
    document.title = `${path[1]} · exhost console`;
  } else if (path[0] === "operator") {
    current = operatorView(path[1] ?? "overview");
    document.title = "Operator · exhost console";
  } else {
    current = marketsView();
    document.title = "Markets · exhost console";
  }
  mount(main, current.element);
}

window.addEventListener("hashchange", route);
route();
