// $default: any other message gets a hint and the sender's connection info.
import { ApiGatewayManagementApiClient, GetConnectionCommand, PostToConnectionCommand } from '@aws-sdk/client-apigatewaymanagementapi';

import { endpointOf } from './endpoint.mjs';

export const handler = async (event) => {
  const connectionId = event.requestContext.connectionId;
  const api = new ApiGatewayManagementApiClient({ endpoint: endpointOf(event) });
  try {
    const info = await api.send(new GetConnectionCommand({ ConnectionId: connectionId }));
    const hint = `Send {"action":"sendmessage","message":"..."} to chat. You are ${connectionId}, connected since ${info.ConnectedAt.toISOString()} from ${info.Identity.SourceIp}.`;
    await api.send(new PostToConnectionCommand({ ConnectionId: connectionId, Data: hint }));
  } catch (err) {
    console.error('could not answer', err);
    return { statusCode: 500 };
  }
  return { statusCode: 200 };
};
