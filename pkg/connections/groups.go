package connections

import (
	"context"
	"net/http"
	"net/url"
)

// Groups, users and broadcast are Switchboard extensions (docs/groups.md):
// one call reaches every member on every node.

// SendToGroup sends data as one text message to every member of group, except
// the connection excluded (the sender, say; "" for none).
func (c *Client) SendToGroup(ctx context.Context, group string, data []byte, excluded string) error {
	u := c.base + "/@groups/" + url.PathEscape(group)
	if excluded != "" {
		u += "?" + url.Values{"excluded": {excluded}}.Encode()
	}
	return c.send(ctx, u, data)
}

// SendToUser sends data as one text message to every connection of user.
func (c *Client) SendToUser(ctx context.Context, user string, data []byte) error {
	return c.send(ctx, c.base+"/@users/"+url.PathEscape(user), data)
}

// Broadcast sends data as one text message to every connection.
func (c *Client) Broadcast(ctx context.Context, data []byte) error {
	return c.send(ctx, c.base+"/@broadcast", data)
}

// AddToGroup adds connection id to group; ErrGone if it does not exist.
func (c *Client) AddToGroup(ctx context.Context, group, id string) error {
	return c.member(ctx, http.MethodPut, group, id)
}

// RemoveFromGroup removes connection id from group.
func (c *Client) RemoveFromGroup(ctx context.Context, group, id string) error {
	return c.member(ctx, http.MethodDelete, group, id)
}

func (c *Client) member(ctx context.Context, method, group, id string) error {
	resp, err := c.do(ctx, method, c.base+"/@groups/"+url.PathEscape(group)+"/connections/"+url.PathEscape(id), nil, nil)
	if err != nil {
		return err
	}
	return drain(resp)
}

func (c *Client) send(ctx context.Context, u string, data []byte) error {
	resp, err := c.do(ctx, http.MethodPost, u, http.Header{"X-Switchboard-Frame": {"text"}}, data)
	if err != nil {
		return err
	}
	return drain(resp)
}
