//! One market's order book followed over the `book` channel, with the checks
//! a client must make (API.md, WebSocket): a snapshot carries the seq it is
//! at; each diff carries the seq of the command that caused it and must be
//! after the book's seq. A diff that is not is a broken stream: the follower
//! reports it and the view resubscribes for a fresh snapshot. Levels are kept
//! as the host's strings; a diff gives a level's new total, zero meaning gone.

import type { Level } from "./api";
import { compare, isZero } from "./decimal";

export class BookFollower {
  /** The seq the book is at; null before the first snapshot. */
  seq: number | null = null;
  /** The seq of the snapshot the book started from, and the diffs applied since. */
  snapshotSeq: number | null = null;
  diffs = 0;
  private bids = new Map<string, string>();
  private asks = new Map<string, string>();

  constructor(readonly symbol: string) {}

  /** Forget everything (the socket closed): wait for the next snapshot. */
  reset(): void {
    this.seq = null;
    this.snapshotSeq = null;
    this.bids.clear();
    this.asks.clear();
  }

  snapshot(seq: number, bids: Level[], asks: Level[]): void {
    this.seq = seq;
    this.snapshotSeq = seq;
    this.diffs = 0;
    this.bids = new Map(bids);
    this.asks = new Map(asks);
  }

  /** Apply a diff; an error message if it breaks the sequence (then nothing is applied). */
  diff(seq: number, bids: Level[], asks: Level[]): string | null {
    if (this.seq === null) return `diff at seq ${seq} before any snapshot`;
    if (seq <= this.seq) return `diff at seq ${seq} is not after the book's seq ${this.seq}`;
    for (const [levels, side] of [
      [bids, this.bids],
      [asks, this.asks],
    ] as [Level[], Map<string, string>][]) {
      for (const [price, qty] of levels) {
        if (isZero(qty)) side.delete(price);
        else side.set(price, qty);
      }
    }
    this.seq = seq;
    this.diffs += 1;
    return null;
  }

  /** Best first on both sides, as the REST book lists them. */
  levels(): { bids: Level[]; asks: Level[] } {
    const bids = [...this.bids.entries()].sort((a, b) => compare(b[0], a[0]));
    const asks = [...this.asks.entries()].sort((a, b) => compare(a[0], b[0]));
    return { bids, asks };
  }
}

/** Whether two books list the same levels (prices compared as numbers, quantities too). */
export function sameLevels(a: Level[], b: Level[]): boolean {
  return a.length === b.length && a.every(([price, qty], i) => compare(price, b[i][0]) === 0 && compare(qty, b[i][1]) === 0);
}
