package main

// This file is written as it would be for AWS Lambda behind an API Gateway
// WebSocket API (the shape of AWS's "simple WebSockets chat" sample, in Go):
// nothing in it knows about Switchboard except the APIGW_ENDPOINT override
// in callbackEndpoint. main.go runs it through pkg/lambdaadapter.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi/types"
)

// table stands in for the sample's DynamoDB table of connection IDs: the
// handler keeps it in a map (shared by concurrent invocations).
var table = struct {
	sync.Mutex
	ids map[string]struct{}
}{ids: map[string]struct{}{}}

func putConnection(id string) {
	table.Lock()
	defer table.Unlock()
	table.ids[id] = struct{}{}
}

func deleteConnection(id string) {
	table.Lock()
	defer table.Unlock()
	delete(table.ids, id)
}

func scanConnections() []string {
	table.Lock()
	defer table.Unlock()
	ids := make([]string, 0, len(table.ids))
	for id := range table.ids {
		ids = append(ids, id)
	}
	return ids
}

// handler is the one Lambda function behind every route.
func handler(ctx context.Context, req events.APIGatewayWebsocketProxyRequest) (events.APIGatewayProxyResponse, error) {
	rc := req.RequestContext
	switch rc.RouteKey {
	case "$connect":
		putConnection(rc.ConnectionID)
		return response(200, "Connected."), nil
	case "$disconnect":
		deleteConnection(rc.ConnectionID)
		return response(200, "Disconnected."), nil
	case "sendmessage":
		return sendMessage(ctx, req)
	default:
		return defaultRoute(ctx, req)
	}
}

// sendMessage posts {"action":"sendmessage","data":"…"}'s data to every
// connection in the table, deleting the ones that are gone.
func sendMessage(ctx context.Context, req events.APIGatewayWebsocketProxyRequest) (events.APIGatewayProxyResponse, error) {
	var body struct {
		Data string `json:"data"`
	}
	if err := json.Unmarshal([]byte(req.Body), &body); err != nil {
		return response(400, "Bad request body."), nil
	}
	api := managementClient(req.RequestContext)
	var failed []error
	for _, id := range scanConnections() {
		_, err := api.PostToConnection(ctx, &apigatewaymanagementapi.PostToConnectionInput{
			ConnectionId: aws.String(id),
			Data:         []byte(body.Data),
		})
		var gone *types.GoneException
		switch {
		case err == nil:
		case errors.As(err, &gone):
			deleteConnection(id) // stale: its $disconnect never reached us
		default:
			failed = append(failed, fmt.Errorf("post to %s: %w", id, err))
		}
	}
	if len(failed) > 0 {
		return response(500, "Failed to send."), errors.Join(failed...)
	}
	return response(200, "Data sent."), nil
}

// defaultRoute answers anything else with a hint and the caller's
// connection info (GetConnection).
func defaultRoute(ctx context.Context, req events.APIGatewayWebsocketProxyRequest) (events.APIGatewayProxyResponse, error) {
	rc := req.RequestContext
	api := managementClient(rc)
	info, err := api.GetConnection(ctx, &apigatewaymanagementapi.GetConnectionInput{ConnectionId: aws.String(rc.ConnectionID)})
	if err != nil {
		return response(500, "Failed to get connection."), fmt.Errorf("get connection: %w", err)
	}
	you := map[string]any{"connectedAt": info.ConnectedAt}
	if info.Identity != nil {
		you["sourceIp"] = aws.ToString(info.Identity.SourceIp)
		you["userAgent"] = aws.ToString(info.Identity.UserAgent)
	}
	desc, err := json.Marshal(you)
	if err != nil {
		return response(500, ""), err
	}
	_, err = api.PostToConnection(ctx, &apigatewaymanagementapi.PostToConnectionInput{
		ConnectionId: aws.String(rc.ConnectionID),
		Data:         []byte("Use the sendmessage route to send a message. Your info: " + string(desc)),
	})
	if err != nil {
		return response(500, "Failed to send."), fmt.Errorf("post to caller: %w", err)
	}
	return response(200, "Hint sent."), nil
}

// callbackEndpoint is where the @connections API is: on AWS,
// https://{domainName}/{stage}. The one change for Switchboard: the
// APIGW_ENDPOINT environment variable overrides it.
func callbackEndpoint(rc events.APIGatewayWebsocketProxyRequestContext) string {
	if ep := os.Getenv("APIGW_ENDPOINT"); ep != "" {
		return ep
	}
	return "https://" + rc.DomainName + "/" + rc.Stage
}

func managementClient(rc events.APIGatewayWebsocketProxyRequestContext) *apigatewaymanagementapi.Client {
	return apigatewaymanagementapi.NewFromConfig(awsConfig, func(o *apigatewaymanagementapi.Options) {
		o.BaseEndpoint = aws.String(callbackEndpoint(rc))
	})
}

// awsConfig is what config.LoadDefaultConfig gives a Lambda: the region and
// credentials from the standard environment variables. Without credentials
// the SDK sends unsigned requests, which the single-node gateway's loopback
// API accepts; with them it signs with SigV4 (the edge's -api-access-keys).
var awsConfig = func() aws.Config {
	cfg := aws.Config{Region: os.Getenv("AWS_REGION"), Credentials: aws.AnonymousCredentials{}}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if key, secret := os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"); key != "" && secret != "" {
		creds := aws.Credentials{AccessKeyID: key, SecretAccessKey: secret, SessionToken: os.Getenv("AWS_SESSION_TOKEN"), Source: "environment"}
		cfg.Credentials = aws.NewCredentialsCache(aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return creds, nil
		}))
	}
	return cfg
}()

func response(status int, body string) events.APIGatewayProxyResponse {
	return events.APIGatewayProxyResponse{StatusCode: status, Body: body}
}
