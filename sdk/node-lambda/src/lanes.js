// Lanes run tasks with bounded concurrency while keeping the order of each
// key's tasks: the events of one connection (its $connect, messages,
// $disconnect) are handled one after another in arrival order, as the edge
// published them, while different connections' events run side by side.

export class Lanes {
  /**
   * @param {number} concurrency tasks running at once
   * @param {number} maxPending tasks waiting or running; push refuses more
   */
  constructor(concurrency, maxPending) {
    this.concurrency = concurrency;
    this.maxPending = maxPending;
    /** @type {Map<string, Array<() => Promise<void>>>} */
    this.lanes = new Map();
    /** @type {string[]} keys whose first task may start; read from head */
    this.runnable = [];
    this.head = 0;
    this.active = 0;
    this.pending = 0;
    /** @type {Array<() => void>} */
    this.idleWaiters = [];
  }

  /**
   * Queues task behind key's earlier tasks. Returns false (and queues
   * nothing) when maxPending tasks are already waiting or running.
   * @param {string} key
   * @param {() => Promise<void>} task must not reject
   * @returns {boolean}
   */
  push(key, task) {
    if (this.pending >= this.maxPending) return false;
    this.pending++;
    const lane = this.lanes.get(key);
    if (lane) {
      lane.push(task);
      return true;
    }
    this.lanes.set(key, [task]);
    this.runnable.push(key);
    this.pump();
    return true;
  }

  pump() {
    while (this.active < this.concurrency && this.head < this.runnable.length) {
      const key = this.runnable[this.head++];
      if (this.head > 1024 && this.head * 2 > this.runnable.length) {
        this.runnable = this.runnable.slice(this.head);
        this.head = 0;
      }
      this.active++;
      void this.run(key);
    }
  }

  /** @param {string} key */
  async run(key) {
    const lane = /** @type {Array<() => Promise<void>>} */ (this.lanes.get(key));
    try {
      await lane[0]();
    } finally {
      lane.shift();
      this.pending--;
      this.active--;
      if (lane.length > 0) this.runnable.push(key);
      else this.lanes.delete(key);
      this.pump();
      if (this.pending === 0) for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  /** Resolves once no task is waiting or running. */
  idle() {
    if (this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(() => resolve(undefined)));
  }
}
