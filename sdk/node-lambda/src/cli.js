// The switchboard-lambda command: flags, loading the handlers, the NATS
// connection, and the SIGTERM drain. bin/switchboard-lambda.js calls main.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { connect, credsAuthenticator } from 'nats';

import { loadHandler } from './load.js';
import { Runner } from './runner.js';

export const usage = `Usage: switchboard-lambda --handler FILE.EXPORT [--routes KEYS] [options]
       switchboard-lambda --route KEY=FILE.EXPORT [--route KEY=FILE.EXPORT ...] [options]

Runs API Gateway WebSocket Lambda handlers as a Switchboard backend over NATS.

  --handler FILE.EXPORT   the handler, as Lambda names it (./index.handler: the
                          export "handler" of ./index.js, .mjs or .cjs)
  --routes KEYS           comma-separated route keys --handler serves: $connect,
                          $disconnect, $resume (only if listed), $default,
                          custom keys, or * for every message route
                          (default: $connect,$disconnect,*)
  --route KEY=FILE.EXPORT one handler for one route key, as API Gateway maps a
                          route to a function (repeatable)
  --nats URLS             NATS server URL(s), comma-separated
                          (env SWITCHBOARD_NATS_URL; default nats://127.0.0.1:4223)
  --prefix P              the gateway's subject prefix (env SWITCHBOARD_PREFIX;
                          default switchboard)
  --queue Q               queue group replicas share (default switchboard-lambda)
  --timeout SECONDS       invocation timeout, as a Lambda's (default 3)
  --concurrency N         invocations at once (default 64); one connection's
                          events always run one after another, in order
  --max-pending N         events waiting or running; more are refused (default 4096)
  --drain-timeout SECONDS on SIGTERM, wait this long for running invocations (default 30)
  --root DIR              directory handler files are relative to (default: .)
  --nats-token T, --nats-user U, --nats-password P, --nats-creds FILE
                          NATS authentication (env SWITCHBOARD_NATS_TOKEN, …)
  --log-level L           debug (one line per invocation), info, warn or error
                          (env SWITCHBOARD_LAMBDA_LOG_LEVEL; default info)
  --help`;

const levels = { debug: 10, info: 20, warn: 30, error: 40 };

/** A logger writing JSON lines to stderr (stdout belongs to the handlers' console.log). */
export function makeLogger(level = 'info') {
  const min = levels[/** @type {keyof levels} */ (level)];
  if (min === undefined) throw new Error(`--log-level ${JSON.stringify(level)}: want debug, info, warn or error`);
  /** @param {keyof levels} lvl */
  const at = (lvl) => (/** @type {string} */ msg, /** @type {object} */ fields = {}) => {
    if (levels[lvl] >= min) process.stderr.write(JSON.stringify({ time: new Date().toISOString(), level: lvl, msg, ...fields }) + '\n');
  };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

/**
 * Parses argv into the runner's configuration; throws a usage error.
 * @param {string[]} argv
 * @param {NodeJS.ProcessEnv} env
 */
export function parseConfig(argv, env) {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      handler: { type: 'string' },
      routes: { type: 'string' },
      route: { type: 'string', multiple: true },
      nats: { type: 'string' },
      prefix: { type: 'string' },
      queue: { type: 'string' },
      timeout: { type: 'string' },
      concurrency: { type: 'string' },
      'max-pending': { type: 'string' },
      'drain-timeout': { type: 'string' },
      root: { type: 'string' },
      'nats-token': { type: 'string' },
      'nats-user': { type: 'string' },
      'nats-password': { type: 'string' },
      'nats-creds': { type: 'string' },
      'log-level': { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help) return { help: true };
  /** @type {Array<{spec: string, routes: string[]}>} */
  const functions = [];
  if (values.handler !== undefined) {
    const routes = values.routes === undefined ? ['$connect', '$disconnect', '*'] : splitList(values.routes);
    if (routes.length === 0) throw new Error('--routes is empty');
    functions.push({ spec: values.handler, routes });
  } else if (values.routes !== undefined) {
    throw new Error('--routes needs --handler');
  }
  for (const r of values.route ?? []) {
    const eq = r.indexOf('=');
    if (eq <= 0 || eq === r.length - 1) throw new Error(`--route ${JSON.stringify(r)}: want KEY=FILE.EXPORT, e.g. '$connect=./connect.handler'`);
    functions.push({ spec: r.slice(eq + 1), routes: [r.slice(0, eq)] });
  }
  if (functions.length === 0) throw new Error('give --handler or --route');
  return {
    help: false,
    functions,
    servers: splitList(values.nats ?? env.SWITCHBOARD_NATS_URL ?? 'nats://127.0.0.1:4223'),
    prefix: values.prefix ?? env.SWITCHBOARD_PREFIX ?? 'switchboard',
    queue: values.queue ?? 'switchboard-lambda',
    timeoutMs: seconds('--timeout', values.timeout ?? '3'),
    concurrency: count('--concurrency', values.concurrency ?? '64'),
    maxPending: count('--max-pending', values['max-pending'] ?? '4096'),
    drainTimeoutMs: seconds('--drain-timeout', values['drain-timeout'] ?? '30'),
    root: values.root ?? '.',
    token: values['nats-token'] ?? env.SWITCHBOARD_NATS_TOKEN,
    user: values['nats-user'] ?? env.SWITCHBOARD_NATS_USER,
    pass: values['nats-password'] ?? env.SWITCHBOARD_NATS_PASSWORD,
    creds: values['nats-creds'] ?? env.SWITCHBOARD_NATS_CREDS,
    logLevel: values['log-level'] ?? env.SWITCHBOARD_LAMBDA_LOG_LEVEL ?? 'info',
  };
}

/** @param {string} s */
function splitList(s) {
  return s.split(',').map((x) => x.trim()).filter((x) => x !== '');
}

/** @param {string} flag @param {string} v */
function seconds(flag, v) {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n <= 0) throw new Error(`${flag} ${JSON.stringify(v)}: want a positive number of seconds`);
  return Math.round(n * 1000);
}

/** @param {string} flag @param {string} v */
function count(flag, v) {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${flag} ${JSON.stringify(v)}: want a positive integer`);
  return n;
}

/**
 * Runs the command until SIGTERM or SIGINT; returns the exit code.
 * @param {string[]} argv
 */
export async function main(argv) {
  let cfg;
  try {
    cfg = parseConfig(argv, process.env);
  } catch (err) {
    process.stderr.write(`switchboard-lambda: ${err instanceof Error ? err.message : err}\n\n${usage}\n`);
    return 2;
  }
  if (cfg.help || !cfg.functions) {
    process.stdout.write(usage + '\n');
    return 0;
  }
  const log = makeLogger(cfg.logLevel);
  // The AWS SDK needs a region, which Lambda always sets; Switchboard's
  // SigV4 check accepts any region.
  process.env.AWS_REGION ??= process.env.AWS_DEFAULT_REGION ?? 'us-east-1';

  const runnerFns = [];
  for (const f of cfg.functions) {
    runnerFns.push({ routes: f.routes, handler: await loadHandler(f.spec, cfg.root), name: f.spec });
  }
  const nc = await connect({
    servers: cfg.servers,
    name: 'switchboard-lambda',
    token: cfg.token,
    user: cfg.user,
    pass: cfg.pass,
    authenticator: cfg.creds ? credsAuthenticator(readFileSync(cfg.creds)) : undefined,
    // A backend outlives NATS restarts: reconnect for as long as it runs.
    maxReconnectAttempts: -1,
  });
  const runner = new Runner(nc, {
    functions: runnerFns,
    prefix: cfg.prefix,
    queue: cfg.queue,
    timeoutMs: cfg.timeoutMs,
    concurrency: cfg.concurrency,
    maxPending: cfg.maxPending,
    logger: log,
  });
  await runner.start();
  log.info('serving', { subjects: runner.subjects(), queue: cfg.queue, nats: nc.getServer() });

  const stop = new Promise((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  const closed = nc.closed().then((err) => ({ closed: err ?? new Error('connection closed') }));
  const why = await Promise.race([stop, closed]);
  if (typeof why === 'object') {
    log.error('NATS connection closed', { err: String(why.closed) });
    return 1;
  }
  log.info('draining', { signal: why });
  let code = 0;
  try {
    await runner.drain({ timeoutMs: cfg.drainTimeoutMs });
  } catch (err) {
    log.warn(String(err instanceof Error ? err.message : err));
    code = 1;
  }
  await nc.drain().catch((err) => log.warn('NATS drain failed', { err: String(err) }));
  log.info('stopped');
  return code;
}
