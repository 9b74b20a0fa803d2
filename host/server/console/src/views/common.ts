//! Pieces every view uses: the API's error shown as code and message, the
//! "not available on this host" notice, and a repeating refresh that stops
//! with its view.

import { ApiError } from "../api";
import { h } from "../dom";

export function errorBox(error: unknown, testid = "error"): HTMLElement {
  if (error instanceof ApiError) {
    return h("div", { class: "alert alert-error", role: "alert", "data-testid": testid, "data-code": error.code },
      h("span", { class: "alert-code" }, error.status ? `${error.status} ${error.code}` : error.code),
      h("span", { class: "alert-message" }, error.message));
  }
  return h("div", { class: "alert alert-error", role: "alert", "data-testid": testid },
    h("span", { class: "alert-message" }, error instanceof Error ? error.message : String(error)));
}

export function notAvailable(what: string): HTMLElement {
  return h("div", { class: "muted-box", "data-testid": "not-available" }, `${what}: not available on this host.`);
}

/** An error, or the notice if the endpoint does not exist on this host. */
export function failure(error: unknown, what: string): HTMLElement {
  return error instanceof ApiError && error.endpointMissing ? notAvailable(what) : errorBox(error);
}

/** Run `task` now and every `period_ms` after it finishes, until stopped. */
export function every(period_ms: number, task: () => Promise<void>): () => void {
  let stopped = false;
  let timer: number | undefined;
  const run = async () => {
    try {
      await task();
    } finally {
      if (!stopped) timer = window.setTimeout(run, period_ms);
    }
  };
  void run();
  return () => {
    stopped = true;
    window.clearTimeout(timer);
  };
}

export function panel(title: string | Node, body: Node | Node[], extra: Record<string, string> = {}, right?: Node): HTMLElement {
  return h("section", { class: "panel", ...extra },
    h("div", { class: "panel-head" }, h("h2", {}, title), right ?? null),
    h("div", { class: "panel-body" }, body));
}

export function num(text: string | number | null | undefined, cls = ""): HTMLElement {
  return h("span", { class: `num ${cls}`.trim() }, text === null || text === undefined ? "—" : String(text));
}
