//! One WebSocket to `/ws` for one market view: the `book` and `trades`
//! channels, reconnecting with backoff. A closed socket may have lost
//! messages (the host closes a socket that fell behind), so every (re)open
//! subscribes afresh: the book starts again from a new snapshot and the view
//! refetches recent trades.

export type FeedStatus = "connecting" | "live" | "reconnecting" | "closed";

export interface FeedHandlers {
  /** The socket is open and subscribed; everything before it may be missing. */
  opened(): void;
  message(message: any): void;
  status(status: FeedStatus, detail: string): void;
}

const RECONNECT_DELAY_MS_MIN = 500;
const RECONNECT_DELAY_MS_MAX = 5_000;

export class Feed {
  private socket: WebSocket | null = null;
  private closed = false;
  private delay_ms = RECONNECT_DELAY_MS_MIN;
  private timer: number | undefined;

  constructor(
    private readonly subscriptions: object[],
    private readonly handlers: FeedHandlers,
  ) {
    this.open();
  }

  private url(): string {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws`;
  }

  private open(): void {
    this.handlers.status(this.delay_ms === RECONNECT_DELAY_MS_MIN ? "connecting" : "reconnecting", "");
    const socket = new WebSocket(this.url());
    this.socket = socket;
    socket.onopen = () => {
      this.delay_ms = RECONNECT_DELAY_MS_MIN;
      for (const subscription of this.subscriptions) socket.send(JSON.stringify({ op: "subscribe", ...subscription }));
      this.handlers.status("live", "");
      this.handlers.opened();
    };
    socket.onmessage = (event: MessageEvent) => {
      let message: any;
      try {
        message = JSON.parse(String(event.data));
      } catch {
        return;
      }
      this.handlers.message(message);
    };
    socket.onclose = (event: CloseEvent) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.closed) return;
      const wait_ms = this.delay_ms;
      this.delay_ms = Math.min(this.delay_ms * 2, RECONNECT_DELAY_MS_MAX);
      this.handlers.status("reconnecting", `socket closed (${event.code}); retrying in ${(wait_ms / 1000).toFixed(1)} s`);
      this.timer = window.setTimeout(() => this.open(), wait_ms);
    };
  }

  /** Drop the socket and start again: the way to recover from a gap. */
  resync(): void {
    const socket = this.socket;
    this.socket = null;
    socket?.close();
    window.clearTimeout(this.timer);
    this.delay_ms = RECONNECT_DELAY_MS_MIN;
    if (!this.closed) this.open();
  }

  close(): void {
    this.closed = true;
    window.clearTimeout(this.timer);
    this.socket?.close();
    this.socket = null;
    this.handlers.status("closed", "");
  }
}
