// Runner: Lambda WebSocket handlers as a Switchboard backend. It subscribes
// to the subjects of the routes it serves in a queue group (replicas share
// the work, each event reaches one of them), invokes the handler as the
// Lambda runtime would, and answers as API Gateway does — the Node
// counterpart of pkg/lambdaadapter.

import { headers as natsHeaders } from 'nats';

import { invoke } from './invoke.js';
import { Lanes } from './lanes.js';
import { ALL_ROUTES, CONNECT_FAILED, Header, checkPrefix, connectReply, routeReply, subjectFor } from './protocol.js';

/**
 * @typedef {object} FunctionSpec
 * @property {string[]} routes route keys: "$connect", "$disconnect", "$resume", "$default", custom keys, or "*" for every message route
 * @property {Function} handler the Lambda handler, (event, context[, callback])
 * @property {string} [name] context.functionName (default: "switchboard-lambda")
 */

/**
 * @typedef {object} Logger
 * @property {(msg: string, fields?: object) => void} [debug]
 * @property {(msg: string, fields?: object) => void} info
 * @property {(msg: string, fields?: object) => void} warn
 * @property {(msg: string, fields?: object) => void} error
 */

/**
 * @typedef {object} RunnerOptions
 * @property {FunctionSpec[]} functions which handler serves which routes; a route has one handler
 * @property {string} [prefix] the gateway's subject prefix (default "switchboard")
 * @property {string} [queue] the queue group (default "switchboard-lambda")
 * @property {number} [timeoutMs] an invocation fails after this long, as a Lambda timeout (default 3000)
 * @property {number} [concurrency] invocations running at once (default 64)
 * @property {number} [maxPending] events waiting or running; beyond, events are refused (default 4096)
 * @property {Logger} [logger] default: silent
 */

const silent = { info() {}, warn() {}, error() {} };
const decoder = new TextDecoder();

export class Runner {
  /**
   * @param {import('nats').NatsConnection} nc owned by the caller
   * @param {RunnerOptions} opts
   */
  constructor(nc, opts) {
    if (!nc) throw new Error('switchboard-lambda: no NATS connection');
    this.nc = nc;
    this.prefix = opts.prefix ?? 'switchboard';
    checkPrefix(this.prefix);
    this.queue = opts.queue ?? 'switchboard-lambda';
    if (!/^[^\s*>]+$/.test(this.queue)) throw new Error(`queue ${JSON.stringify(this.queue)}: want a NATS queue group name (no spaces or wildcards)`);
    this.timeoutMs = positive('timeoutMs', opts.timeoutMs ?? 3000);
    this.log = opts.logger ?? silent;
    this.lanes = new Lanes(positive('concurrency', opts.concurrency ?? 64, true), positive('maxPending', opts.maxPending ?? 4096, true));
    /** @type {Array<{key: string, subject: string, kind: 'connect'|'event'|'route', fn: Function, name: string}>} */
    this.bindings = [];
    const seen = new Set();
    let anyRoute = false;
    let namedRoute = false;
    for (const f of opts.functions ?? []) {
      if (typeof f.handler !== 'function') throw new Error('switchboard-lambda: handler must be a function');
      for (const key of f.routes) {
        if (seen.has(key)) throw new Error(`route ${JSON.stringify(key)} has two handlers`);
        seen.add(key);
        const { subject, kind } = subjectFor(this.prefix, key);
        if (key === ALL_ROUTES) anyRoute = true;
        else if (kind === 'route') namedRoute = true;
        this.bindings.push({ key, subject, kind, fn: f.handler, name: f.name ?? 'switchboard-lambda' });
      }
    }
    if (this.bindings.length === 0) throw new Error('switchboard-lambda: no routes to serve');
    // "*" subscribes to <prefix>.route.>, which a named route's subject also
    // matches: the message would be delivered twice.
    if (anyRoute && namedRoute) throw new Error('route "*" already covers every message route: list the keys instead, or use "*" alone');
    /** @type {import('nats').Subscription[]} */
    this.subs = [];
    this.seq = 0;
    /** @type {Promise<void> | undefined} */
    this.draining = undefined;
  }

  /** The subjects served, for logs. */
  subjects() {
    return this.bindings.map((b) => b.subject);
  }

  /** Subscribes every route and waits until the server has the subscriptions. */
  async start() {
    if (this.subs.length > 0 || this.draining) throw new Error('switchboard-lambda: already started');
    for (const b of this.bindings) {
      this.subs.push(
        this.nc.subscribe(b.subject, {
          queue: this.queue,
          callback: (err, msg) => {
            if (err) this.log.error('subscription failed', { subject: b.subject, err: err.message });
            else this.dispatch(b, msg);
          },
        }),
      );
    }
    await this.nc.flush();
  }

  /**
   * @param {Runner['bindings'][number]} b
   * @param {import('nats').Msg} msg
   */
  dispatch(b, msg) {
    // Messages arrive in the order the edge published them; one lane per
    // connection keeps it, so $disconnect never overtakes a message.
    const conn = msg.headers?.get(Header.connectionId) || `#${this.seq++}`;
    if (this.lanes.push(conn, () => this.handle(b, msg))) return;
    this.log.warn('overloaded: event refused', { subject: msg.subject, connectionId: conn, pending: this.lanes.pending });
    if (b.kind === 'connect') this.respond(msg, utf8('{"statusCode":503}'));
    else if (b.kind === 'route' && wantsReply(msg)) this.respondError(msg, 'backend overloaded');
  }

  /**
   * @param {Runner['bindings'][number]} b
   * @param {import('nats').Msg} msg
   */
  async handle(b, msg) {
    const requestId = msg.headers?.get(Header.msgId) ?? '';
    let event;
    try {
      event = JSON.parse(decoder.decode(msg.data));
    } catch (err) {
      this.log.error('undecodable event', { subject: msg.subject, err: String(err) });
      if (b.kind === 'connect') this.respond(msg, CONNECT_FAILED);
      else if (b.kind === 'route' && wantsReply(msg)) this.respondError(msg, 'undecodable event');
      return;
    }
    const start = Date.now();
    const out = await invoke(b.fn, event, { requestId, functionName: b.name, timeoutMs: this.timeoutMs });
    const connectionId = event?.requestContext?.connectionId;
    const route = event?.requestContext?.routeKey;
    if (!out.ok) this.log.warn('handler failed', { route, connectionId, requestId, err: out.error?.message });
    this.log.debug?.('invoked', { route, connectionId, requestId, ok: out.ok, ms: Date.now() - start });
    switch (b.kind) {
      case 'connect': {
        // A failed $connect invocation is a 500 to the client, as on API Gateway.
        let body = CONNECT_FAILED;
        if (out.ok) {
          try {
            body = connectReply(out.result);
          } catch (err) {
            this.log.warn('handler failed', { route: '$connect', connectionId, requestId, err: String(err) });
          }
        }
        this.respond(msg, body);
        return;
      }
      case 'event':
        return; // $disconnect, $resume: nobody waits for an answer
      case 'route': {
        if (!wantsReply(msg)) return; // one-way, as AWS_PROXY without a route response: the result is dropped
        if (!out.ok) {
          this.respondError(msg, out.timedOut ? 'handler timed out' : 'handler failed');
          return;
        }
        let reply;
        try {
          reply = routeReply(out.result);
        } catch (err) {
          this.log.warn('handler failed', { route: event?.requestContext?.routeKey, connectionId, requestId, err: String(err) });
          this.respondError(msg, 'handler failed');
          return;
        }
        const h = natsHeaders();
        if (reply.binary) h.set(Header.binary, 'true');
        this.respond(msg, reply.body, h);
      }
    }
  }

  /**
   * @param {import('nats').Msg} msg
   * @param {Uint8Array} body
   * @param {import('nats').MsgHdrs} [h]
   */
  respond(msg, body, h) {
    try {
      if (!msg.respond(body, h ? { headers: h } : undefined)) this.log.warn('reply failed: no reply subject', { subject: msg.subject });
    } catch (err) {
      this.log.warn('reply failed', { subject: msg.subject, err: String(err) });
    }
  }

  /** @param {import('nats').Msg} msg @param {string} why */
  respondError(msg, why) {
    const h = natsHeaders();
    h.set(Header.error, why);
    this.respond(msg, new Uint8Array(0), h);
  }

  /**
   * Stops taking events and waits until those already received are handled
   * (each within the invocation timeout), at most timeoutMs. Safe to call twice.
   * @param {{timeoutMs?: number}} [opts]
   * @returns {Promise<void>}
   */
  drain(opts = {}) {
    this.draining ??= (async () => {
      const results = await Promise.allSettled(this.subs.map((s) => s.drain()));
      for (const r of results) {
        if (r.status === 'rejected') this.log.warn('unsubscribe failed', { err: String(r.reason) });
      }
      const limit = opts.timeoutMs ?? 30000;
      let timer;
      const expired = new Promise((resolve) => {
        timer = setTimeout(resolve, limit, false);
      });
      const done = await Promise.race([this.lanes.idle().then(() => true), expired]);
      clearTimeout(timer);
      if (!done) throw new Error(`switchboard-lambda: drain: ${this.lanes.pending} events still unhandled after ${limit} ms`);
    })();
    return this.draining;
  }
}

/** A request that expects an answer (one-way messages carry a reply subject only for "no responders"). */
function wantsReply(/** @type {import('nats').Msg} */ msg) {
  return Boolean(msg.reply) && msg.headers?.get(Header.oneWay) !== 'true';
}

/** @param {string} s */
function utf8(s) {
  return new TextEncoder().encode(s);
}

/** @param {string} name @param {number} v @param {boolean} [integer] */
function positive(name, v, integer = false) {
  if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v) || (integer && !Number.isInteger(v))) {
    throw new Error(`${name} must be a positive ${integer ? 'integer' : 'number'}, got ${v}`);
  }
  return v;
}
