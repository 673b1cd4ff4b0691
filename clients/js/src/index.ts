// switchboard-client: a WebSocket that survives network drops. It opens a
// resumable Switchboard connection (docs/resume.md), reconnects with capped
// exponential backoff and jitter when the socket is lost, resumes with the
// token and the count of data messages it received, and queues what the
// application sends meanwhile. No dependencies: it runs on the platform's
// WebSocket (browsers, Node 22+) or one passed in (Node 18/20: `ws`).

/** The part of the WebSocket API this library uses: the platform's or `ws`. */
export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol: string;
  readonly extensions: string;
  readonly bufferedAmount: number;
  binaryType: string;
  onopen: ((ev: any) => any) | null;
  onmessage: ((ev: any) => any) | null;
  onclose: ((ev: any) => any) | null;
  onerror: ((ev: any) => any) | null;
  send(data: any): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket constructor: `globalThis.WebSocket` or node's `ws`. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** Data a message carries, as WebSocket delivers it. */
export type MessageData = string | ArrayBuffer | Blob | ArrayBufferView;

export interface BackoffOptions {
  /** Delay before the first reconnect attempt. Default 250 ms. */
  minDelayMs?: number;
  /** The cap on any delay. Default 10 000 ms: well inside the edge's default 30 s resume window. */
  maxDelayMs?: number;
  /** Growth per failed attempt. Default 2. */
  factor?: number;
  /** Fraction of each delay taken off at random, 0–1 (spreads a crowd of clients). Default 0.5. */
  jitter?: number;
}

export interface HeartbeatOptions {
  /** The text the edge answers itself (the edge's -app-ping). */
  message: string;
  /** The edge's answer (its -app-pong). Default "pong". */
  pong?: string;
  /** How often to send message while open. Default 25 000 ms. */
  intervalMs?: number;
  /** How long after a ping without any frame the socket is declared dead. Default 10 000 ms. */
  timeoutMs?: number;
}

export interface Options {
  /** The WebSocket implementation. Default: globalThis.WebSocket. */
  WebSocket?: WebSocketConstructor;
  /** Subprotocols for every socket. */
  protocols?: string | string[];
  /** Ask for a resumable connection (?resume=1). Default true. With false, each reconnect is a new connection. */
  resume?: boolean;
  /** Reconnect when a socket is lost. Default true. */
  reconnect?: boolean;
  /** Reconnect attempts in a row before giving up (close event, code 1006). Default Infinity. */
  maxRetries?: number;
  backoff?: BackoffOptions;
  /**
   * Decides whether a close the server sent is worth a reconnect. Default
   * shouldReconnect (exported): everything except the codes that say the
   * server or the application meant it.
   */
  shouldReconnect?: (code: number, reason: string) => boolean;
  /** Time for a socket to open and deliver its session frame, and for close() to be answered. Default 10 000 ms. */
  connectTimeoutMs?: number;
  /** Application-level heartbeat through the edge's -app-ping. Default off. */
  heartbeat?: HeartbeatOptions;
  /**
   * Without heartbeat: declare the socket dead when no frame (message, or a
   * protocol ping where the WebSocket implementation shows them, as `ws`
   * does) arrives for this long. Default 0: off.
   */
  deadAfterMs?: number;
  /** Messages queued while not open; past this, send returns false. Default 1000. */
  maxQueuedMessages?: number;
  /** Bytes queued while not open; past this, send returns false. Default 1 MiB. */
  maxQueuedBytes?: number;
  /** For tests: the source of randomness of the jitter. Default Math.random. */
  random?: () => number;
}

const defaults = {
  minDelayMs: 250,
  maxDelayMs: 10_000,
  factor: 2,
  jitter: 0.5,
  connectTimeoutMs: 10_000,
  heartbeatIntervalMs: 25_000,
  heartbeatTimeoutMs: 10_000,
  maxQueuedMessages: 1000,
  maxQueuedBytes: 1 << 20,
};

/**
 * The delay before reconnect attempt n (1 for the first): minDelayMs ×
 * factor^(n−1), capped at maxDelayMs, less a random fraction up to jitter
 * of it. So it lies in [d × (1 − jitter), d] for that capped d.
 */
export function backoffDelay(attempt: number, o: BackoffOptions = {}, random: () => number = Math.random): number {
  const min = o.minDelayMs ?? defaults.minDelayMs;
  const max = o.maxDelayMs ?? defaults.maxDelayMs;
  const factor = o.factor ?? defaults.factor;
  const jitter = Math.min(1, Math.max(0, o.jitter ?? defaults.jitter));
  const d = Math.min(max, min * Math.pow(factor, Math.max(0, attempt - 1)));
  return Math.round(d * (1 - jitter * random()));
}

/**
 * The default reconnect rule for a close frame from the server. These end
 * the connection for good: 1000 (normal: the application closed it), 1002
 * (protocol error), 1003 (unsupported data), 1007 (invalid payload), 1008
 * (policy: refused, slow consumer, …), 1009 (too big), 1010 (extension) and
 * 4000–4999 (the application's own codes), since a new socket would meet
 * the same answer. Everything else reconnects: 1001 (going away: a drain or
 * restart), 1005 (no code), 1006 (lost, no close frame), 1011–1015 and
 * 3000–3999.
 */
export function shouldReconnect(code: number, _reason?: string): boolean {
  if (code >= 4000 && code <= 4999) return false;
  return ![1000, 1002, 1003, 1007, 1008, 1009, 1010].includes(code);
}

/** `open`: the connection is established (once, like WebSocket's). */
export class OpenEvent extends Event {
  constructor(readonly connectionId: string, readonly resumable: boolean) {
    super('open');
  }
}

/** `message`: a data message, in order, exactly once across resumes. */
export class MessageEvent extends Event {
  constructor(readonly data: MessageData) {
    super('message');
  }
}

/** `resumed`: a new socket continues the same connection; nothing was lost. */
export class ResumedEvent extends Event {
  constructor(
    readonly connectionId: string,
    /** Time from the loss of the old socket to the resume. */
    readonly downtimeMs: number,
  ) {
    super('resumed');
  }
}

/**
 * `recovered`: the connection could not be resumed (`recovered` is false):
 * this is a fresh one, with a new ID, and the messages sent to the old one
 * since the loss are gone. The application starts over (joins its rooms
 * again, fetches what it missed). reason is the edge's (unknown, gap,
 * received, disabled) or "disabled" when the old connection had no token.
 */
export class RecoveredEvent extends Event {
  readonly recovered = false;
  constructor(
    readonly reason: string,
    readonly connectionId: string,
    readonly previousConnectionId: string,
  ) {
    super('recovered');
  }
}

/** `reconnecting`: a socket was lost (or failed to open); the next attempt is in delayMs. */
export class ReconnectingEvent extends Event {
  constructor(
    readonly attempt: number,
    readonly delayMs: number,
    /** The close code of the lost socket (1006 when it just vanished, 4900 dead, 4901 connect timeout). */
    readonly code: number,
    readonly reason: string,
  ) {
    super('reconnecting');
  }
}

/** `close`: the end; no more reconnects. */
export class CloseEvent extends Event {
  constructor(
    readonly code: number,
    readonly reason: string,
    readonly wasClean: boolean,
    /** Messages still queued, never sent. */
    readonly unsent: number,
  ) {
    super('close');
  }
}

/** `error`: a socket reported an error; reconnecting follows unless the connection is closed. */
export class ErrorEvent extends Event {
  constructor(readonly error: unknown) {
    super('error');
  }
}

export interface SwitchboardEventMap {
  open: OpenEvent;
  message: MessageEvent;
  resumed: ResumedEvent;
  recovered: RecoveredEvent;
  reconnecting: ReconnectingEvent;
  close: CloseEvent;
  error: ErrorEvent;
}

/** Close codes of sockets the library gave up on itself (never on the wire). */
export const CODE_DEAD = 4900;
export const CODE_CONNECT_TIMEOUT = 4901;

type Listener<E> = ((this: SwitchboardSocket, ev: E) => any) | null;

interface Session {
  connectionId: string;
  token: string;
}

/**
 * A WebSocket-like connection to a Switchboard edge that reconnects and
 * resumes. readyState is CONNECTING until the first socket delivers its
 * session frame, OPEN while a socket is up, CONNECTING again while
 * reconnecting, CLOSING after close(), CLOSED at the end.
 */
export class SwitchboardSocket extends EventTarget {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;
  readonly CONNECTING = 0;
  readonly OPEN = 1;
  readonly CLOSING = 2;
  readonly CLOSED = 3;

  onopen: Listener<OpenEvent> = null;
  onmessage: Listener<MessageEvent> = null;
  onresumed: Listener<ResumedEvent> = null;
  onrecovered: Listener<RecoveredEvent> = null;
  onreconnecting: Listener<ReconnectingEvent> = null;
  onclose: Listener<CloseEvent> = null;
  onerror: Listener<ErrorEvent> = null;

  #opts: Options;
  #url: string | URL | (() => string | URL);
  #lastURL = '';
  #WS: WebSocketConstructor;
  #state = 0;
  #binaryType = 'blob';
  #ws: WebSocketLike | null = null;
  #session: Session | null = null;
  #resumable = false;
  #received = 0;
  #opened = false;
  #attempt = 0;
  #lostAt = 0;
  #queue: MessageData[] = [];
  #queuedBytes = 0;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #connectTimer: ReturnType<typeof setTimeout> | undefined;
  #deadTimer: ReturnType<typeof setTimeout> | undefined;
  #pingTimer: ReturnType<typeof setInterval> | undefined;
  #closeAsked: { code: number; reason: string } | null = null;

  /**
   * url is where to connect, or a function called before every socket (a
   * fresh credential in the query for each attempt, e.g. a JWT that may
   * have expired while away: a resume refused with 401 keeps the
   * connection detached, and the next attempt can carry a new one).
   */
  constructor(url: string | URL | (() => string | URL), opts: Options = {}) {
    super();
    const WS = opts.WebSocket ?? (globalThis as any).WebSocket;
    if (typeof WS !== 'function') {
      throw new TypeError('switchboard-client: no WebSocket here: pass one as the WebSocket option (Node 18/20: the ws package)');
    }
    this.#WS = WS;
    this.#opts = opts;
    this.#url = url;
    // Browsers say when the network is back: the waiting attempt starts
    // then, instead of at the end of a backoff that grew while offline.
    if (typeof window !== 'undefined' && typeof window.addEventListener === 'function') {
      window.addEventListener('online', this.#onOnline);
    }
    this.#open();
  }

  #onOnline = (): void => {
    if (this.#state === SwitchboardSocket.CONNECTING && this.#ws === null) {
      clearTimeout(this.#retryTimer);
      this.#open();
    }
  };

  /** The URL of the latest socket, without the resume parameters. */
  get url(): string {
    return this.#lastURL;
  }

  /** 0 CONNECTING (also while reconnecting), 1 OPEN, 2 CLOSING, 3 CLOSED. */
  get readyState(): number {
    return this.#state;
  }

  /** "blob" (default) or "arraybuffer"; applies to every socket. */
  get binaryType(): string {
    return this.#binaryType;
  }
  set binaryType(t: string) {
    this.#binaryType = t;
    if (this.#ws) this.#ws.binaryType = t;
  }

  /** The connection's ID (changes only on recovered:false); "" before the first session frame. */
  get connectionId(): string {
    return this.#session?.connectionId ?? '';
  }

  /** Whether the edge issued a resume token for this connection. */
  get resumable(): boolean {
    return this.#resumable;
  }

  /** Data messages received on this connection, all sockets together. */
  get received(): number {
    return this.#received;
  }

  /** Messages waiting for a socket. */
  get queued(): number {
    return this.#queue.length;
  }

  /** Bytes buffered by the current socket plus those queued. */
  get bufferedAmount(): number {
    return (this.#ws?.bufferedAmount ?? 0) + this.#queuedBytes;
  }

  get protocol(): string {
    return this.#ws?.protocol ?? '';
  }

  get extensions(): string {
    return this.#ws?.extensions ?? '';
  }

  /**
   * Sends data now when open, else queues it for the next socket (also
   * before the first open, unlike WebSocket). Returns false, dropping data,
   * when the queue is full or the connection is closing or closed: the
   * queue keeps the oldest messages, so what does go out stays in order.
   */
  send(data: MessageData): boolean {
    if (this.#state === SwitchboardSocket.CLOSING || this.#state === SwitchboardSocket.CLOSED) return false;
    if (this.#state === SwitchboardSocket.OPEN && this.#ws?.readyState === 1) {
      this.#ws.send(data);
      return true;
    }
    // Not open, or the socket is closing under us: its close brings a new one.
    const n = byteSize(data);
    const maxMsgs = this.#opts.maxQueuedMessages ?? defaults.maxQueuedMessages;
    const maxBytes = this.#opts.maxQueuedBytes ?? defaults.maxQueuedBytes;
    if (this.#queue.length + 1 > maxMsgs || this.#queuedBytes + n > maxBytes) return false;
    this.#queue.push(data);
    this.#queuedBytes += n;
    return true;
  }

  /**
   * Ends the connection: a close frame when a socket is open (the edge then
   * ends the connection at once: one DISCONNECT, no detach), no more
   * reconnects. code is 1000 or 3000–4999, as for WebSocket.
   */
  close(code = 1000, reason = ''): void {
    if (code !== 1000 && !(code >= 3000 && code <= 4999)) {
      throw new RangeError(`switchboard-client: close code ${code}: want 1000 or 3000-4999`);
    }
    if (this.#state === SwitchboardSocket.CLOSING || this.#state === SwitchboardSocket.CLOSED) return;
    this.#closeAsked = { code, reason };
    this.#state = SwitchboardSocket.CLOSING;
    clearTimeout(this.#retryTimer);
    const ws = this.#ws;
    if (ws && ws.readyState === 1) {
      ws.close(code, reason); // #lost finishes on its close event,
      // or on this timer when the network is gone and no answer comes.
      clearTimeout(this.#connectTimer);
      this.#connectTimer = setTimeout(() => this.#lost(ws, code, reason), this.#opts.connectTimeoutMs ?? defaults.connectTimeoutMs);
      return;
    }
    this.#drop();
    this.#finish(code, reason, true);
  }

  // Typed listeners; any other type goes to EventTarget as usual.
  override addEventListener<K extends keyof SwitchboardEventMap>(
    type: K, listener: (this: SwitchboardSocket, ev: SwitchboardEventMap[K]) => any, options?: boolean | AddEventListenerOptions): void;
  override addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  override addEventListener(type: string, listener: any, options?: boolean | AddEventListenerOptions): void {
    super.addEventListener(type, listener, options);
  }
  override removeEventListener<K extends keyof SwitchboardEventMap>(
    type: K, listener: (this: SwitchboardSocket, ev: SwitchboardEventMap[K]) => any, options?: boolean | EventListenerOptions): void;
  override removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
  override removeEventListener(type: string, listener: any, options?: boolean | EventListenerOptions): void {
    super.removeEventListener(type, listener, options);
  }

  #emit(ev: Event): void {
    const h = (this as any)['on' + ev.type];
    if (typeof h === 'function') {
      try {
        h.call(this, ev);
      } catch (err) {
        // Reported like a listener's error, not thrown into the reconnect logic.
        setTimeout(() => {
          throw err;
        });
      }
    }
    this.dispatchEvent(ev);
  }

  /** The URL of the next socket: the caller's, plus what resume asks. */
  #socketURL(): string {
    this.#lastURL = String(typeof this.#url === 'function' ? this.#url() : this.#url);
    if (this.#opts.resume === false) return this.#lastURL;
    const u = new URL(this.#lastURL);
    u.searchParams.delete('resume');
    u.searchParams.delete('received');
    if (this.#session?.token) {
      u.searchParams.set('resume', this.#session.token);
      u.searchParams.set('received', String(this.#received));
    } else {
      u.searchParams.set('resume', '1');
    }
    return u.toString();
  }

  #open(): void {
    let ws: WebSocketLike;
    try {
      ws = new this.#WS(this.#socketURL(), this.#opts.protocols);
    } catch (err) {
      // A bad URL or protocol: no reconnect can fix it. Told after the
      // constructor returns, so that its listeners hear it.
      queueMicrotask(() => {
        this.#emit(new ErrorEvent(err));
        this.#finish(1006, String((err as Error)?.message ?? err), false);
      });
      return;
    }
    this.#ws = ws;
    ws.binaryType = this.#binaryType;
    let first = this.#opts.resume !== false;
    const connectTimeout = this.#opts.connectTimeoutMs ?? defaults.connectTimeoutMs;
    this.#connectTimer = setTimeout(() => this.#lost(ws, CODE_CONNECT_TIMEOUT, 'connect timeout'), connectTimeout);
    ws.onopen = () => {
      if (this.#ws !== ws) return;
      this.#alive(ws);
      if (!first) this.#established(null);
    };
    ws.onmessage = (ev: { data: MessageData }) => {
      if (this.#ws !== ws) return;
      this.#alive(ws);
      if (first) {
        first = false;
        const s = parseSession(ev.data);
        this.#established(s);
        if (s) return;
        // Not a session frame: a server without resume; it is data.
      }
      this.#received++;
      const hb = this.#opts.heartbeat;
      if (hb && typeof ev.data === 'string' && ev.data === (hb.pong ?? 'pong')) return;
      this.#emit(new MessageEvent(ev.data));
    };
    ws.onerror = (ev: any) => {
      if (this.#ws !== ws) return;
      this.#emit(new ErrorEvent(ev?.error ?? ev));
    };
    ws.onclose = (ev: { code: number; reason: string; wasClean?: boolean }) => {
      if (this.#ws !== ws) return;
      this.#lost(ws, ev.code, ev.reason ?? '', ev.wasClean);
    };
    // ws (Node) shows protocol pings: they prove the socket alive too.
    const on = (ws as any).on;
    if (typeof on === 'function') {
      on.call(ws, 'ping', () => this.#ws === ws && this.#alive(ws));
      on.call(ws, 'pong', () => this.#ws === ws && this.#alive(ws));
    }
  }

  /** A socket is up: s is its session frame (null without resume). */
  #established(s: { connectionId: string; token?: string; resumed?: boolean; reason?: string } | null): void {
    clearTimeout(this.#connectTimer);
    const previous = this.#session;
    const wasResumable = this.#resumable;
    this.#attempt = 0;
    this.#state = SwitchboardSocket.OPEN;
    this.#startHeartbeat();
    if (s) {
      this.#session = { connectionId: s.connectionId, token: s.token ?? '' };
      this.#resumable = !!s.token;
    } else {
      this.#session = null;
      this.#resumable = false;
    }
    const id = this.#session?.connectionId ?? '';
    if (!this.#opened) {
      this.#opened = true;
      this.#flush();
      this.#emit(new OpenEvent(id, this.#resumable));
    } else if (s?.resumed) {
      this.#flush();
      this.#emit(new ResumedEvent(id, Date.now() - this.#lostAt));
    } else {
      this.#received = 0;
      this.#flush();
      const reason = s?.reason ?? (wasResumable ? 'unknown' : 'disabled');
      this.#emit(new RecoveredEvent(reason, id, previous?.connectionId ?? ''));
    }
  }

  #flush(): void {
    const q = this.#queue;
    this.#queue = [];
    this.#queuedBytes = 0;
    for (const m of q) this.#ws?.send(m);
  }

  /** A frame arrived: the dead-socket timer starts over. */
  #alive(ws: WebSocketLike): void {
    clearTimeout(this.#deadTimer);
    const hb = this.#opts.heartbeat;
    const after = hb
      ? (hb.intervalMs ?? defaults.heartbeatIntervalMs) + (hb.timeoutMs ?? defaults.heartbeatTimeoutMs)
      : this.#opts.deadAfterMs ?? 0;
    if (after > 0) this.#deadTimer = setTimeout(() => this.#lost(ws, CODE_DEAD, 'no frame within ' + after + ' ms'), after);
  }

  #startHeartbeat(): void {
    clearInterval(this.#pingTimer);
    const hb = this.#opts.heartbeat;
    if (!hb) return;
    const ws = this.#ws;
    this.#pingTimer = setInterval(() => {
      if (this.#ws === ws && ws && ws.readyState === 1) ws.send(hb.message);
    }, hb.intervalMs ?? defaults.heartbeatIntervalMs);
  }

  /** Forgets the current socket: no handler of it runs again. */
  #drop(): void {
    clearTimeout(this.#connectTimer);
    clearTimeout(this.#deadTimer);
    clearInterval(this.#pingTimer);
    const ws = this.#ws;
    this.#ws = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = null;
    // Not null: ws (Node) reports the abort of a handshake as an error
    // event, which an EventEmitter without a listener would throw.
    ws.onerror = () => {};
    if (ws.readyState === 0 || ws.readyState === 1) {
      // A socket given up on may still be open as far as the platform knows.
      const terminate = (ws as any).terminate;
      if (typeof terminate === 'function') terminate.call(ws);
      else ws.close(1000);
    }
  }

  /** The socket ws ended (close event, dead, or connect timeout). */
  #lost(ws: WebSocketLike, code: number, reason: string, wasClean = false): void {
    if (this.#ws !== ws) return;
    const wasOpen = this.#state === SwitchboardSocket.OPEN;
    this.#drop();
    if (this.#closeAsked) {
      this.#finish(this.#closeAsked.code, this.#closeAsked.reason, wasClean);
      return;
    }
    const rule = this.#opts.shouldReconnect ?? shouldReconnect;
    const ours = code === CODE_DEAD || code === CODE_CONNECT_TIMEOUT;
    if (this.#opts.reconnect === false || (!ours && !rule(code, reason))) {
      this.#finish(code, reason, wasClean);
      return;
    }
    if (this.#attempt >= (this.#opts.maxRetries ?? Infinity)) {
      this.#finish(code, reason, false);
      return;
    }
    if (wasOpen) this.#lostAt = Date.now();
    this.#state = SwitchboardSocket.CONNECTING;
    this.#attempt++;
    const delay = backoffDelay(this.#attempt, this.#opts.backoff, this.#opts.random);
    this.#emit(new ReconnectingEvent(this.#attempt, delay, code, reason));
    if (this.#state !== SwitchboardSocket.CONNECTING) return; // a listener closed it
    this.#retryTimer = setTimeout(() => this.#open(), delay);
  }

  #finish(code: number, reason: string, wasClean: boolean): void {
    clearTimeout(this.#retryTimer);
    if (typeof window !== 'undefined' && typeof window.removeEventListener === 'function') {
      window.removeEventListener('online', this.#onOnline);
    }
    this.#state = SwitchboardSocket.CLOSED;
    const unsent = this.#queue.length;
    this.#queue = [];
    this.#queuedBytes = 0;
    this.#emit(new CloseEvent(code, reason, wasClean, unsent));
  }
}

/** The session frame in data, or null when data is something else. */
function parseSession(data: MessageData): { connectionId: string; token?: string; resumed?: boolean; reason?: string } | null {
  if (typeof data !== 'string' || !data.startsWith('{"type":"session"')) return null;
  try {
    const s = JSON.parse(data);
    return s && s.type === 'session' && typeof s.connectionId === 'string' ? s : null;
  } catch {
    return null;
  }
}

const encoder = new TextEncoder();

function byteSize(data: MessageData): number {
  if (typeof data === 'string') return encoder.encode(data).length;
  if (typeof Blob !== 'undefined' && data instanceof Blob) return data.size;
  return (data as ArrayBuffer | ArrayBufferView).byteLength ?? 0;
}
