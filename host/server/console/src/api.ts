//! The host's HTTP API, same origin as the page. Every failure becomes an
//! `ApiError` carrying the API's own `{"error": {code, message}}`, so a view
//! can show exactly what the host said. The operator token lives in
//! sessionStorage only: it is gone when the tab closes and never reaches
//! localStorage, a cookie or a URL.

const TOKEN_KEY = "exhost.operator_token";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }

  /**
   * The endpoint itself is absent (an older host): not an error to alarm
   * anyone with. A path that exists for another method only (`POST
   * /admin/v1/users` without its `GET`) answers 405.
   */
  get endpointMissing(): boolean {
    return (
      (this.status === 404 && this.code === "not_found" && /no such endpoint/i.test(this.message)) ||
      (this.status === 405 && this.code === "method_not_allowed")
    );
  }

  get authFailed(): boolean {
    return this.status === 401 || this.status === 403;
  }
}

export const token = {
  get(): string | null {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set(value: string): void {
    sessionStorage.setItem(TOKEN_KEY, value);
  },
  clear(): void {
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

/** Called when the host refuses the stored operator token (it was rotated, say). */
let onOperatorRefused: (error: ApiError) => void = () => {};
export function whenOperatorRefused(handler: (error: ApiError) => void): void {
  onOperatorRefused = handler;
}

interface Options {
  body?: unknown;
  /** Send the operator token; `tokenOverride` tries one not yet stored. */
  operator?: boolean;
  tokenOverride?: string;
}

export async function request<T>(method: string, path: string, options: Options = {}): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  let body: BodyInit | undefined;
  if (options.body instanceof ArrayBuffer || options.body instanceof Blob) {
    headers["Content-Type"] = "application/wasm";
    body = options.body;
  } else if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.body);
  }
  const bearer = options.tokenOverride ?? (options.operator ? token.get() : null);
  if (bearer !== null) headers["Authorization"] = `Bearer ${bearer}`;

  let response: Response;
  try {
    response = await fetch(path, { method, headers, body, cache: "no-store" });
  } catch (error) {
    throw new ApiError(0, "network", `the host did not answer (${error instanceof Error ? error.message : error})`);
  }
  const text = await response.text();
  let answer: any = null;
  try {
    answer = text === "" ? null : JSON.parse(text);
  } catch {
    answer = null;
  }
  if (!response.ok) {
    const error = new ApiError(
      response.status,
      answer?.error?.code ?? `http_${response.status}`,
      answer?.error?.message ?? (text.slice(0, 200) || response.statusText),
    );
    if (error.authFailed && options.operator && options.tokenOverride === undefined) onOperatorRefused(error);
    throw error;
  }
  return answer as T;
}

export const get = <T>(path: string) => request<T>("GET", path);
export const admin = <T>(method: string, path: string, body?: unknown) =>
  request<T>(method, path, { operator: true, body });

// The shapes the console reads (API.md), only the fields it uses.

export type Level = [price: string, qty: string];

export interface Market {
  symbol: string;
  base: string;
  quote: string;
  tick_size: string;
  lot_size: string;
  matching_module: string;
  status: string;
}

export interface Book {
  symbol: string;
  seq: number;
  bids: Level[];
  asks: Level[];
}

export interface Trade {
  seq: number;
  trade_id: number;
  price: string;
  qty: string;
  taker_side: "buy" | "sell";
  ts: number;
}

export interface Ticker {
  symbol: string;
  seq?: number;
  last_price: string | null;
  volume_24h: string;
  high_24h: string | null;
  low_24h: string | null;
  trades_24h: number;
  /** The figures cover only the newest trades of a very busy window. */
  partial?: boolean;
}

export interface User {
  user_id: number;
  api_key: string | null;
  public_key?: string | null;
  /** "hmac", "ed25519" or "unusable", where the host says so. */
  signs_with?: string;
}

export interface Account {
  user_id: number;
  seq: number;
  balances: Record<string, { total: string; available: string; reserved: string }>;
  positions: {
    symbol: string;
    size: string;
    entry_price: string;
    mark_price: string;
    unrealized_pnl: string;
    realized_pnl: string;
    liquidation_price: string | null;
  }[];
  equity: string;
  margin_ratio: string;
}

export interface LedgerAsset {
  deposits: string;
  withdrawals: string;
  fees: string;
  insurance_fund: string;
  user_balances: string;
  unrealized_pnl?: string;
  imbalance?: string;
}

export interface ModuleInfo {
  hash: string;
  kind: string;
  abi_version: number;
  size: number;
  state_version?: number;
  active_for?: string[];
  /** On upload: how the module would take over each target it could serve. */
  dry_run?: { target: string; ok: boolean; error: string | null; from_state_version?: number; to_state_version?: number; rollback_checked?: boolean }[];
}

export interface Activation {
  seq: number;
  target: string;
  from?: string | null;
  to?: string | null;
  [field: string]: unknown;
}

export interface Modules {
  modules: ModuleInfo[];
  activations: Activation[];
}

export interface Status {
  seq: number;
  health: string;
  journal: { last_seq: number; size_bytes: number };
  snapshot: { seq: number; digest: string; size_bytes?: number } | null;
  snapshots: number;
  module_faults: { total: number; recent: { seq: number; module: string; fault: string }[] };
}

export interface Cluster {
  node: string | null;
  role: string;
  active_node: string | null;
  applied_seq: number;
  log_seq: number;
  term?: number;
}
