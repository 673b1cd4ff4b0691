// A TCP proxy in front of the edge that plays the network: up, down (every
// connection reset, new ones refused: a phone in a lift), or a black hole
// (connections stay open but no byte gets through either way: a dead NAT
// mapping, which neither side notices without a heartbeat).

import net from 'node:net';

export class NetworkProxy {
  /** @param {number} targetPort the edge's WebSocket port on 127.0.0.1 */
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.isDown = false;
    /** @type {Set<{client: net.Socket, upstream: net.Socket, hole: boolean}>} */
    this.pairs = new Set();
    this.server = net.createServer((client) => this.#accept(client));
  }

  /** Listens on a free loopback port; resolves with ws://127.0.0.1:port. */
  start() {
    return new Promise((resolve) => {
      this.server.listen(0, '127.0.0.1', () => {
        this.port = /** @type {net.AddressInfo} */ (this.server.address()).port;
        this.url = `ws://127.0.0.1:${this.port}`;
        resolve(this.url);
      });
    });
  }

  #accept(client) {
    if (this.isDown) {
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect(this.targetPort, '127.0.0.1');
    const pair = { client, upstream, hole: false };
    this.pairs.add(pair);
    client.on('data', (b) => pair.hole || upstream.write(b));
    upstream.on('data', (b) => pair.hole || client.write(b));
    const end = () => {
      this.pairs.delete(pair);
      if (!client.destroyed) client.resetAndDestroy();
      if (!upstream.destroyed) upstream.resetAndDestroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  }

  /** The network goes away: both ends of every connection are reset (no close frame), new ones refused. */
  down() {
    this.isDown = true;
    for (const p of this.pairs) {
      p.client.resetAndDestroy();
      p.upstream.resetAndDestroy();
    }
    this.pairs.clear();
  }

  /** The network is back. */
  up() {
    this.isDown = false;
  }

  /** The current connections stop carrying bytes, and stay open. New ones work. */
  blackhole() {
    for (const p of this.pairs) p.hole = true;
  }

  close() {
    this.down();
    return new Promise((resolve) => this.server.close(() => resolve(undefined)));
  }
}
