// $connect: remember the new connection.
import * as connections from './connections.mjs';

export const handler = async (event) => {
  try {
    await connections.put(event.requestContext.connectionId);
  } catch (err) {
    console.error('could not store the connection', err);
    return { statusCode: 500, body: 'Failed to connect' };
  }
  return { statusCode: 200, body: 'Connected' };
};
