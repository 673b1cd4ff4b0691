package lifecycle

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/switchboardgw/switchboard/pkg/protocol"
)

// selector is a compiled route selection expression: literal text and JSON
// paths into the message body, concatenated.
type selector struct {
	parts  []selPart
	static bool // no paths: every message gets the same key
}

type selPart struct {
	lit  string
	path []string // nil for a literal
}

var errSelector = errors.New("bad route selection expression")

const bodyVar = "request.body"

// compileSelector parses "$request.body.a.b", a template with
// "${request.body.a.b}" variables, or a static key ("\$" is a literal '$').
func compileSelector(expr string) (*selector, error) {
	if expr == "" {
		return nil, fmt.Errorf("%w: empty", errSelector)
	}
	if strings.HasPrefix(expr, "$"+bodyVar) && !strings.Contains(expr, "${") {
		p, err := parsePath(expr[1:])
		if err != nil {
			return nil, err
		}
		return &selector{parts: []selPart{{path: p}}}, nil
	}
	s := &selector{static: true}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			s.parts = append(s.parts, selPart{lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(expr); i++ {
		switch {
		case expr[i] == '\\' && i+1 < len(expr) && expr[i+1] == '$':
			lit.WriteByte('$')
			i++
		case strings.HasPrefix(expr[i:], "${"):
			end := strings.IndexByte(expr[i:], '}')
			if end < 0 {
				return nil, fmt.Errorf("%w: unclosed ${ in %q", errSelector, expr)
			}
			p, err := parsePath(expr[i+2 : i+end])
			if err != nil {
				return nil, err
			}
			flush()
			s.parts = append(s.parts, selPart{path: p})
			s.static = false
			i += end
		case expr[i] == '$':
			return nil, fmt.Errorf("%w: bare $ in %q (write \\$ for a literal)", errSelector, expr)
		default:
			lit.WriteByte(expr[i])
		}
	}
	flush()
	return s, nil
}

// parsePath parses "request.body.a.b" into ["a","b"].
func parsePath(v string) ([]string, error) {
	rest, ok := strings.CutPrefix(v, bodyVar+".")
	if !ok {
		return nil, fmt.Errorf("%w: only $request.body.<path> is supported, got %q", errSelector, v)
	}
	p := strings.Split(rest, ".")
	for _, k := range p {
		if k == "" {
			return nil, fmt.Errorf("%w: empty path element in %q", errSelector, v)
		}
	}
	return p, nil
}

// eval returns the route key the expression selects for a message, before
// validation: "" when the message is binary, empty or not JSON (API
// Gateway's $default cases). A missing path contributes "".
func (s *selector) eval(payload []byte, binary bool) string {
	if s.static {
		if len(s.parts) == 1 {
			return s.parts[0].lit
		}
		return ""
	}
	if binary || len(payload) == 0 || !json.Valid(payload) {
		return ""
	}
	if len(s.parts) == 1 {
		return jsonPathString(payload, s.parts[0].path)
	}
	var b strings.Builder
	for _, p := range s.parts {
		if p.path == nil {
			b.WriteString(p.lit)
		} else {
			b.WriteString(jsonPathString(payload, p.path))
		}
	}
	return b.String()
}

// jsonPathString returns the value at path in valid JSON data, stringified:
// a string's contents, a number or boolean as written, "" for null or a
// missing path, objects and arrays as their raw JSON text.
func jsonPathString(data []byte, path []string) string {
	raw := jsonLookup(data, path)
	if len(raw) == 0 {
		return ""
	}
	switch raw[0] {
	case '"':
		if !containsByte(raw, '\\') {
			return string(raw[1 : len(raw)-1])
		}
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return ""
		}
		return s
	case 'n':
		return ""
	default:
		return string(raw)
	}
}

func containsByte(b []byte, c byte) bool {
	for _, x := range b {
		if x == c {
			return true
		}
	}
	return false
}

// jsonLookup returns the raw value at path in data, which must be valid JSON,
// or nil. It walks the bytes without decoding: no allocation unless a key
// carries escapes. With duplicate keys the first wins.
func jsonLookup(data []byte, path []string) []byte {
	i := skipWS(data, 0)
	for _, key := range path {
		if i >= len(data) || data[i] != '{' {
			return nil
		}
		i = skipWS(data, i+1)
		found := false
		for i < len(data) && data[i] != '}' {
			kEnd := skipString(data, i)
			if kEnd < 0 {
				return nil
			}
			match := keyEquals(data[i:kEnd], key)
			i = skipWS(data, kEnd)
			if i >= len(data) || data[i] != ':' {
				return nil
			}
			i = skipWS(data, i+1)
			if match {
				found = true
				break
			}
			vEnd := skipValue(data, i)
			if vEnd < 0 {
				return nil
			}
			i = skipWS(data, vEnd)
			if i < len(data) && data[i] == ',' {
				i = skipWS(data, i+1)
			}
		}
		if !found {
			return nil
		}
	}
	end := skipValue(data, i)
	if end < 0 {
		return nil
	}
	return data[i:end]
}

// keyEquals compares a raw JSON string token with key.
func keyEquals(raw []byte, key string) bool {
	inner := raw[1 : len(raw)-1]
	if !containsByte(inner, '\\') {
		return string(inner) == key
	}
	var s string
	return json.Unmarshal(raw, &s) == nil && s == key
}

func skipWS(d []byte, i int) int {
	for i < len(d) && (d[i] == ' ' || d[i] == '\t' || d[i] == '\n' || d[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at d[i], or -1.
func skipString(d []byte, i int) int {
	if i >= len(d) || d[i] != '"' {
		return -1
	}
	for i++; i < len(d); i++ {
		switch d[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// skipValue returns the index after the value starting at d[i], or -1.
func skipValue(d []byte, i int) int {
	if i >= len(d) {
		return -1
	}
	switch d[i] {
	case '"':
		return skipString(d, i)
	case '{', '[':
		depth := 0
		for ; i < len(d); i++ {
			switch d[i] {
			case '"':
				e := skipString(d, i)
				if e < 0 {
					return -1
				}
				i = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	default:
		for ; i < len(d); i++ {
			switch d[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
		}
		return i
	}
}

// routeResult is where a message goes.
type routeResult struct {
	key     string // route key reported in the event: a custom key or $default
	token   string // subject token
	invalid bool   // the selected key was refused
	drop    bool   // refused and the policy is drop
}

// routeSelector applies the selection expression, validation and the allow-list.
type routeSelector struct {
	sel    *selector
	max    int
	allow  map[string]bool // nil: every legal key
	policy InvalidKeyPolicy
}

func (r *routeSelector) route(payload []byte, binary bool) routeResult {
	key := r.sel.eval(payload, binary)
	switch {
	case key == "" || key == protocol.RouteDefault:
		return routeResult{key: protocol.RouteDefault, token: protocol.DefaultToken}
	case !protocol.ValidRouteKey(key, r.max):
		if r.policy == InvalidKeyDrop {
			return routeResult{invalid: true, drop: true}
		}
		return routeResult{key: protocol.RouteDefault, token: protocol.DefaultToken, invalid: true}
	case r.allow != nil && !r.allow[key]:
		return routeResult{key: protocol.RouteDefault, token: protocol.DefaultToken}
	}
	return routeResult{key: key, token: key}
}
