// The @connections endpoint. On AWS the handlers build it from the event;
// APIGW_ENDPOINT (set in local.env) points them at Switchboard's API
// instead. Left unset, the AWS behaviour holds: start the edge with
// -domain-name and -stage naming an https address of the API.
export const endpointOf = (event) =>
  process.env.APIGW_ENDPOINT || `https://${event.requestContext.domainName}/${event.requestContext.stage}`;
