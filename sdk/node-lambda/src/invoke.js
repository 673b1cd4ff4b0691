// Invoking a handler the way the Lambda Node.js runtime does: an async
// handler's promise, or a callback handler's callback (and the legacy
// context.succeed/fail/done), settles the invocation; a timeout fails it.

/**
 * @typedef {object} Outcome
 * @property {boolean} ok
 * @property {unknown} [result] the handler's result when ok
 * @property {Error} [error] why it failed when not ok
 * @property {boolean} [timedOut] the invocation ran past its timeout
 */

/**
 * @typedef {object} InvokeOptions
 * @property {string} requestId context.awsRequestId (the event ID)
 * @property {string} functionName context.functionName
 * @property {number} timeoutMs the invocation fails after this long
 */

/**
 * Runs fn(event, context, callback) and settles on the first of: its
 * promise, its callback, context.succeed/fail/done, the timeout. A handler
 * that declares fewer than three parameters and returns a non-promise
 * settles with its return value. A timed-out handler keeps running (Node
 * cannot stop it); its late result is ignored, as Lambda ignores it.
 * @param {Function} fn
 * @param {unknown} event
 * @param {InvokeOptions} opts
 * @returns {Promise<Outcome>}
 */
export function invoke(fn, event, opts) {
  return new Promise((resolve) => {
    let settled = false;
    /** @param {Outcome} o */
    const settle = (o) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(o);
    };
    const ok = (/** @type {unknown} */ result) => settle({ ok: true, result });
    const fail = (/** @type {unknown} */ err) => settle({ ok: false, error: asError(err) });
    const deadline = Date.now() + opts.timeoutMs;
    const timer = setTimeout(() => {
      settle({ ok: false, timedOut: true, error: new Error(`Task timed out after ${(opts.timeoutMs / 1000).toFixed(2)} seconds`) });
    }, opts.timeoutMs);

    const context = {
      awsRequestId: opts.requestId,
      functionName: opts.functionName,
      functionVersion: '$LATEST',
      invokedFunctionArn: '',
      memoryLimitInMB: '',
      logGroupName: '',
      logStreamName: '',
      callbackWaitsForEmptyEventLoop: true,
      getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
      succeed: ok,
      fail,
      done: (/** @type {unknown} */ err, /** @type {unknown} */ result) => (err != null ? fail(err) : ok(result)),
    };
    const callback = (/** @type {unknown} */ err, /** @type {unknown} */ result) => (err != null ? fail(err) : ok(result));

    let ret;
    try {
      ret = fn(event, context, callback);
    } catch (err) {
      fail(err);
      return;
    }
    if (ret !== null && typeof ret === 'object' && typeof ret.then === 'function') {
      ret.then(ok, (/** @type {unknown} */ err) => fail(err ?? new Error('handler rejected without a reason')));
    } else if (fn.length < 3) {
      ok(ret);
    }
  });
}

/** @param {unknown} err @returns {Error} */
function asError(err) {
  if (err instanceof Error) return err;
  return new Error(typeof err === 'string' ? err : `handler failed: ${safeJSON(err)}`);
}

/** @param {unknown} v */
function safeJSON(v) {
  try {
    return JSON.stringify(v);
  } catch {
    return String(v);
  }
}
