// The chat's table of connection IDs. The AWS tutorial keeps it in
// DynamoDB; here it lives in the runner's memory, shared by the four
// handlers because one switchboard-lambda process serves them all. This is
// the one part of the app that changed: a single replica only, and the
// table starts empty at every start (clients reconnect).

const ids = new Set();

/** Adds a connection (DynamoDB: PutItem). */
export async function put(connectionId) {
  ids.add(connectionId);
}

/** Removes a connection (DynamoDB: DeleteItem). */
export async function remove(connectionId) {
  ids.delete(connectionId);
}

/** Every connection (DynamoDB: Scan). */
export async function scan() {
  return [...ids];
}
