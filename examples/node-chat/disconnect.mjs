// $disconnect: forget the connection.
import * as connections from './connections.mjs';

export const handler = async (event) => {
  try {
    await connections.remove(event.requestContext.connectionId);
  } catch (err) {
    console.error('could not remove the connection', err);
    return { statusCode: 500, body: 'Failed to disconnect' };
  }
  return { statusCode: 200, body: 'Disconnected' };
};
