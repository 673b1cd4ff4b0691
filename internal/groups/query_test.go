package groups

import "net/url"

func urlQuery(raw string) (url.Values, error) { return url.ParseQuery(raw) }
