// sendmessage: {"action":"sendmessage","message":"…"} goes to every other
// connection through the @connections API.
import { ApiGatewayManagementApiClient, GoneException, PostToConnectionCommand } from '@aws-sdk/client-apigatewaymanagementapi';

import * as connections from './connections.mjs';
import { endpointOf } from './endpoint.mjs';

export const handler = async (event) => {
  let ids;
  try {
    ids = await connections.scan();
  } catch (err) {
    console.error('could not list the connections', err);
    return { statusCode: 500 };
  }
  const api = new ApiGatewayManagementApiClient({ endpoint: endpointOf(event) });
  const { message } = JSON.parse(event.body);
  const sender = event.requestContext.connectionId;
  await Promise.all(
    ids
      .filter((id) => id !== sender)
      .map(async (id) => {
        try {
          await api.send(new PostToConnectionCommand({ ConnectionId: id, Data: message }));
        } catch (err) {
          if (err instanceof GoneException) {
            await connections.remove(id); // it left without a $disconnect reaching us
          } else {
            console.error(`could not post to ${id}`, err);
          }
        }
      }),
  );
  return { statusCode: 200 };
};
