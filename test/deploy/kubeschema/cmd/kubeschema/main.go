// Command kubeschema validates manifests offline for the deploy tests: it
// reads a JSON object {"name": "YAML stream", …} on stdin and writes
// {"name": ["" or error, one per document], …} on stdout. It exits 0 when it
// could judge every file, whatever the verdicts, and 2 on a usage error.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/switchboardgw/switchboard/test/deploy/kubeschema"
)

func main() {
	version := flag.String("version", "1.30", "Kubernetes version of the schemas (one of the embedded ones)")
	flag.Parse()
	if err := run(*version); err != nil {
		fmt.Fprintln(os.Stderr, "kubeschema:", err)
		os.Exit(2)
	}
}

func run(version string) error {
	v, err := kubeschema.New(version)
	if err != nil {
		return err
	}
	var files map[string]string
	if err := json.NewDecoder(os.Stdin).Decode(&files); err != nil {
		return fmt.Errorf("read the manifests (a JSON object of name: YAML) from stdin: %w", err)
	}
	verdicts := make(map[string][]string, len(files))
	for name, body := range files {
		errs, err := v.Validate([]byte(body))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		out := make([]string, len(errs))
		for i, e := range errs {
			if e != nil {
				out[i] = e.Error()
			}
		}
		verdicts[name] = out
	}
	return json.NewEncoder(os.Stdout).Encode(verdicts)
}
