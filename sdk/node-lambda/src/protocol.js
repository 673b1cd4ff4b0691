// Switchboard's backend protocol, version 1, as a Lambda runner needs it
// (docs/protocol.md): which subject each route arrives on, the headers, and
// how a handler's result becomes the reply the edge reads. It mirrors
// pkg/lambdaadapter, so a Node handler and a Go handler answer alike.

/** Header names of protocol v1. */
export const Header = Object.freeze({
  /** The event ID; also the Lambda request ID. */
  msgId: 'Nats-Msg-Id',
  connectionId: 'Switchboard-Connection-Id',
  /** "true" on a message whose reply subject only reports "no responders". */
  oneWay: 'Switchboard-One-Way',
  /** "true" on a two-way reply: send it as a binary frame. */
  binary: 'Switchboard-Binary',
  /** On a two-way reply: the handler failed, the client gets the error frame. */
  error: 'Switchboard-Error',
});

/** Route keys the gateway treats specially. */
export const CONNECT = '$connect';
export const DISCONNECT = '$disconnect';
/**
 * RESUME events: a detached connection came back with the same ID
 * (docs/resume.md). API Gateway has no such invocation, so a runner gets
 * them only when "$resume" is one of its route keys; "*" does not cover it.
 */
export const RESUME = '$resume';
export const DEFAULT = '$default';
/** Every message route (the subject wildcard `<prefix>.route.>`). */
export const ALL_ROUTES = '*';

/**
 * The subject token of a message route, as the edge makes it: "$default"
 * travels as "_default"; other keys must be 1–128 bytes of printable ASCII
 * without . * > " \ and not start with $. Returns "" for a key the gateway
 * never routes to.
 * @param {string} key
 * @returns {string}
 */
export function routeToken(key) {
  if (key === DEFAULT) return '_default';
  if (typeof key !== 'string' || key === '' || key.length > 128 || key[0] === '$' || key === '_default') return '';
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f || '.*>"\\'.includes(key[i])) return '';
  }
  return key;
}

/**
 * The subject a route key's events arrive on.
 * @param {string} prefix the gateway's subject prefix
 * @param {string} key a route key, "$connect", "$disconnect", "$resume" or "*"
 * @returns {{subject: string, kind: 'connect'|'event'|'route'}}
 */
export function subjectFor(prefix, key) {
  if (key === CONNECT) return { subject: `${prefix}.connect`, kind: 'connect' };
  if (key === DISCONNECT) return { subject: `${prefix}.event.disconnect`, kind: 'event' };
  if (key === RESUME) return { subject: `${prefix}.event.resume`, kind: 'event' };
  if (key === ALL_ROUTES) return { subject: `${prefix}.route.>`, kind: 'route' };
  const tok = routeToken(key);
  if (tok === '') {
    throw new Error(`route key ${JSON.stringify(key)} is not one the gateway routes to (1-128 printable ASCII characters without . * > " \\, not starting with $, or one of $connect, $disconnect, $resume, $default)`);
  }
  return { subject: `${prefix}.route.${tok}`, kind: 'route' };
}

/**
 * Checks a subject prefix: one or more NATS tokens, no wildcards.
 * @param {string} prefix
 */
export function checkPrefix(prefix) {
  if (typeof prefix !== 'string' || prefix === '' || /[\s*>]/.test(prefix) || prefix.startsWith('.') || prefix.endsWith('.') || prefix.includes('..')) {
    throw new Error(`prefix ${JSON.stringify(prefix)}: want NATS subject tokens such as "switchboard" or "acme.ws"`);
  }
}

const utf8 = new TextEncoder();

/** The $connect reply when the handler failed: API Gateway answers 500. */
export const CONNECT_FAILED = utf8.encode('{"statusCode":500}');

/**
 * The $connect reply: the handler's result as JSON, which the edge reads as
 * an APIGatewayProxyResponse (statusCode ≥ 300 denies). undefined or null
 * allows. Throws if the result cannot be serialized, as the Lambda runtime
 * fails such an invocation.
 * @param {unknown} result
 * @returns {Uint8Array}
 */
export function connectReply(result) {
  if (result === undefined || result === null) return new Uint8Array(0);
  const json = JSON.stringify(result);
  if (json === undefined) throw new Error('handler result cannot be serialized to JSON');
  return utf8.encode(json);
}

const base64Std = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * The body a two-way route sends to the client, from the handler's result
 * (an APIGatewayProxyResponse). undefined or null sends nothing; a non-2xx
 * statusCode is a failure, as API Gateway treats it; a base64 body is sent
 * as a binary frame. Throws for a result of another shape.
 * @param {unknown} result
 * @returns {{body: Uint8Array, binary: boolean}}
 */
export function routeReply(result) {
  if (result === undefined || result === null) return { body: new Uint8Array(0), binary: false };
  if (typeof result !== 'object' || Array.isArray(result)) {
    throw new Error(`handler result is not a proxy response ({statusCode, body}): got ${Array.isArray(result) ? 'an array' : typeof result}`);
  }
  const r = /** @type {{statusCode?: unknown, body?: unknown, isBase64Encoded?: unknown}} */ (result);
  const status = r.statusCode ?? 0;
  if (!Number.isInteger(status)) throw new Error(`handler result: statusCode ${JSON.stringify(r.statusCode)} is not an integer`);
  if (status !== 0 && (status < 200 || status > 299)) throw new Error(`handler returned status ${status}`);
  const body = r.body ?? '';
  if (typeof body !== 'string') throw new Error('handler result: body must be a string');
  const b64 = r.isBase64Encoded ?? false;
  if (typeof b64 !== 'boolean') throw new Error('handler result: isBase64Encoded must be a boolean');
  if (!b64) return { body: utf8.encode(body), binary: false };
  if (!base64Std.test(body)) throw new Error('handler result: body is not base64 (isBase64Encoded is true)');
  return { body: new Uint8Array(Buffer.from(body, 'base64')), binary: true };
}
