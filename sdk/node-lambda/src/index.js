// switchboard-lambda: run API Gateway WebSocket Lambda handlers (Node.js)
// unchanged as Switchboard backends over NATS. The command is
// bin/switchboard-lambda.js; Runner is for embedding.
export { Runner } from './runner.js';
export { invoke } from './invoke.js';
export { loadHandler, parseHandler } from './load.js';
export { Header, routeToken, subjectFor, connectReply, routeReply } from './protocol.js';
