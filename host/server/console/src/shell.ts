//! What the shell shares with views: the view contract and the top bar's
//! connection light.

import { h } from "./dom";
import type { FeedStatus } from "./feed";

export interface View {
  element: HTMLElement;
  destroy(): void;
}

export const connection = h("span", { class: "conn", "data-testid": "connection", "data-state": "idle", hidden: true },
  h("span", { class: "dot" }), h("span", { class: "conn-label" }, ""));

/** The top bar's connection light; views with a live feed drive it. */
export function setConnection(state: FeedStatus | "idle", detail = ""): void {
  connection.hidden = state === "idle";
  connection.dataset.state = state;
  connection.title = detail;
  const label = { idle: "", connecting: "Connecting", live: "Live", reconnecting: "Reconnecting", closed: "Offline" }[state];
  connection.querySelector(".conn-label")!.textContent = label;
}

