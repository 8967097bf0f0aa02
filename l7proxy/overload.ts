/**
 * Per-worker overload shedding, after Envoy's overload manager: when this proxy process itself is the bottleneck
 * (its event loop lags, or too many requests are in flight) new requests are answered at once with 503 instead of
 * waiting in socket buffers until their clients time out.
 */
// Signals: the event-loop lag (how late a 100 ms timer fires) and the worker's in-flight request count.
// Actions: 'admit'; 'shed' (new requests get 503 + x-nodemesh-overloaded: proxy + retry-after);
// 'stop-accepting' (also reset new connections: even accepting them costs CPU the worker does not have).
// Hysteresis: leaving an overloaded state needs both signals well under their limits for a hold time, so a
// worker hovering at a limit does not flap between serving and refusing.
import type { EffectiveLimits } from './config.ts';

export type OverloadAction = 'admit' | 'shed' | 'stop-accepting';

/** The limits that trigger shedding (ProxyLimits.maxEventLoopLagMs / maxInFlightRequests). */
export type OverloadLimits = Pick<EffectiveLimits, 'maxEventLoopLagMs' | 'maxInFlightRequests'>;

/** What the decision remembers between calls. */
export type OverloadState = { action: OverloadAction; lastOverloadedAtMs: number };

/** Over this multiple of a limit the worker stops accepting connections too. */
export const STOP_ACCEPTING_FACTOR = 2;
/** Back to 'admit' only once both signals are at or under this fraction of their limits... */
export const RECOVERY_FRACTION = 0.5;
/** ...and nothing was over a limit for this long. */
export const RECOVERY_HOLD_MS = 1000;
/** How often the lag timer fires. */
export const LAG_SAMPLE_INTERVAL_MS = 100;
/** Seconds a shed client is told to wait (retry-after). */
export const SHED_RETRY_AFTER_S = 1;

export const INITIAL_OVERLOAD_STATE: OverloadState = Object.freeze({ action: 'admit', lastOverloadedAtMs: -Infinity });

/**
 * The action for a new request or connection given the latest lag sample and the requests already in flight
 * (not counting the one being decided). Pure: the caller keeps the returned state for the next call.
 */
export function computeOverloadAction(input: { lagMs: number; inFlight: number; nowMs: number; limits: OverloadLimits; previous: OverloadState }): OverloadState {
  const { lagMs, inFlight, nowMs, limits, previous } = input;
  // inFlight counts the requests already admitted: admitting one more may reach the limit, not pass it.
  const lagOver = lagMs > limits.maxEventLoopLagMs;
  const inFlightOver = inFlight >= limits.maxInFlightRequests;
  if (lagOver || inFlightOver) {
    const severe = lagMs > limits.maxEventLoopLagMs * STOP_ACCEPTING_FACTOR || inFlight >= limits.maxInFlightRequests * STOP_ACCEPTING_FACTOR;
    return { action: severe ? 'stop-accepting' : 'shed', lastOverloadedAtMs: nowMs };
  }
  if (previous.action === 'admit') return previous;
  const calm = lagMs <= limits.maxEventLoopLagMs * RECOVERY_FRACTION && inFlight <= limits.maxInFlightRequests * RECOVERY_FRACTION;
  if (calm && nowMs - previous.lastOverloadedAtMs >= RECOVERY_HOLD_MS) return { action: 'admit', lastOverloadedAtMs: previous.lastOverloadedAtMs };
  // Under the limits but not calm yet: keep refusing requests, but take connections again.
  return previous.action === 'shed' ? previous : { action: 'shed', lastOverloadedAtMs: previous.lastOverloadedAtMs };
}

/** One worker's overload state: a lag timer plus the in-flight count, decided with `computeOverloadAction`. */
export class OverloadMonitor {
  inFlight = 0;
  #state: OverloadState = INITIAL_OVERLOAD_STATE;
  #lagMs = 0;
  #timer: NodeJS.Timeout | undefined;
  #limits: () => OverloadLimits;
  #now: () => number;

  constructor(limits: () => OverloadLimits, now: () => number = () => performance.now()) {
    this.#limits = limits;
    this.#now = now;
  }

  /** Start sampling the event-loop lag (unref'd: never keeps the process alive). */
  start(): void {
    if (this.#timer) return;
    let expected = this.#now() + LAG_SAMPLE_INTERVAL_MS;
    this.#timer = setInterval(() => {
      const now = this.#now();
      // How late this tick ran: the time the loop was busy with something else.
      this.#lagMs = Math.max(0, now - expected);
      expected = now + LAG_SAMPLE_INTERVAL_MS;
      this.decide();
    }, LAG_SAMPLE_INTERVAL_MS);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#lagMs = 0;
    // inFlight stays: requests still open decrement it as they close.
    this.#state = INITIAL_OVERLOAD_STATE;
  }

  /** Re-decide with the latest signals; returns the action in force. */
  decide(): OverloadAction {
    const previous = this.#state;
    // Skip the call (and its allocation) on the common path: admitting, well under both limits.
    const limits = this.#limits();
    if (previous.action === 'admit' && this.#lagMs <= limits.maxEventLoopLagMs && this.inFlight < limits.maxInFlightRequests) return 'admit';
    this.#state = computeOverloadAction({ lagMs: this.#lagMs, inFlight: this.inFlight, nowMs: this.#now(), limits, previous });
    return this.#state.action;
  }

  /** The action last decided, without re-deciding (for new connections). */
  get action(): OverloadAction { return this.#state.action; }
  get lagMs(): number { return this.#lagMs; }
}
